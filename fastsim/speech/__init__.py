"""The speech application: audio in, speech synthesis, Hugging Face model families and the
hidden-state runner, probe tasks and probes. Built on the metric library, never the other way."""
