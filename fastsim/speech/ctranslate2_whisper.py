"""Whisper checkpoints in the CTranslate2 ("faster-whisper") format, read without CTranslate2 and
converted to a ``transformers`` ``WhisperForConditionalGeneration`` (encoder and decoder).

The format (little-endian), as this reader understands it:

* ``u32`` binary version (2 to 6 are read; 3 to 6 are what converters have written for Whisper);
* from version 2: the spec name (``u16`` length, then that many bytes, NUL-padded) and a ``u32``
  spec revision; the spec must be ``WhisperSpec``;
* ``u32`` variable count; per variable: its name (as the spec name), a ``u8`` rank, rank x ``u32``
  dims, then from version 4 a ``u8`` dtype id (0 float32, 1 int8, 2 int16, 3 int32, 4 float16,
  5 bfloat16) and a ``u32`` byte count, before version 4 a ``u8`` item size (4 float32, 2 int16,
  1 int8) and a ``u32`` element count; then the bytes;
* from version 3: a ``u32`` alias count and (alias, target) name pairs. Converters alias every
  variable that equals an earlier one (``decoder/projection/weight`` -> the embeddings, and in
  random or untrained models many biases and layer norms), so every name is looked up through them.

``CT2Checkpoint`` indexes such a file without loading it: the header is parsed with small
buffered reads and skips over the data, so only the variable being converted is ever in memory
(the base model is ~145 MB). ``model.bin`` or ``model.bin.part1``, ``.part2``, ... (concatenated
in order; the parts may sit in different folders, as two PyPI packages ship Whisper base) are
recognised by ``model_files``. Every malformed input raises ``CT2FormatError`` naming the file:
another spec, a truncated file, an unknown dtype id, a byte count that does not match the shape,
bytes after the end, a variable missing or of the wrong shape, or an unsupported setting.

Conversion (``convert``) to Hugging Face names:

* ``encoder/conv{1,2}`` -> ``model.encoder.conv{1,2}``; ``encoder/position_encodings/encodings`` ->
  ``model.encoder.embed_positions``; ``encoder/layer_norm`` (gamma, beta) -> ``model.encoder.layer_norm``;
* ``encoder/layer_{i}/self_attention/linear_0`` is q, k, v stacked on dim 0 -> ``q_proj``, ``k_proj``,
  ``v_proj``. Hugging Face's ``k_proj`` has no bias; the k part of the bias is dropped. That is
  exact whatever its value: a key bias adds ``q . b`` to every score of a query, the same for all
  keys, which the softmax cancels. ``linear_1`` -> ``out_proj``, ``self_attention/layer_norm`` ->
  ``self_attn_layer_norm``, ``ffn/linear_{0,1}`` -> ``fc1``/``fc2``, ``ffn/layer_norm`` ->
  ``final_layer_norm``;
* the decoder likewise, plus ``attention/linear_0`` (q), ``attention/linear_1`` (k and v stacked),
  ``attention/linear_2`` (output), ``attention/layer_norm`` -> ``encoder_attn*``;
  ``decoder/embeddings/weight`` -> ``embed_tokens`` and the output projection ``proj_out`` tied to
  it when ``decoder/projection/weight`` is an alias of it (or equal); else kept separate, untied;
* the config from the shapes (width, mel bins, layers, FFN widths, vocabulary, positions) and the
  ``num_heads`` scalars; special token ids from ``tokenizer.json`` (or the vocabulary size), the
  generation settings (suppressed tokens, alignment heads, languages, tasks) from ``config.json``.

Weights in float16/bfloat16/float32 are cast to ``dtype`` (float32 by default: exact, the model
runs on CPU). Quantized weights (int8 or int16 with ``<name>_scale``, as CTranslate2's
``quantization="int8"`` writes them: int8 with one scale per output row, int16 with one scale)
are dequantized, ``w = q / scale``, which is what CTranslate2 itself computes when it runs such a
file in float; ``quantized="refuse"`` raises instead. AWQ files (``quantization_type`` in
``config.json``) are refused by name.

``load_ctranslate2_whisper(source)`` converts once and caches the result under the user cache
directory (``$FASTSIM_CACHE`` or ``~/.cache/fastsim``, in ``models/``) as a ``save_pretrained``
folder (safetensors + config + generation config + the tokenizer), keyed by a sha256 of the
model files (and config/tokenizer, dtype, converter version); sha256 runs at ~1 GB/s here, so the
key costs ~0.15 s for the base model. The cache is written into a temporary folder beside it and
renamed into place, so a killed run never leaves a half cache.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import struct
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: bump when the conversion changes: old caches are then ignored
CONVERTER_VERSION = 1
SPEC = "WhisperSpec"
VERSIONS = range(2, 7)
#: dtype id -> (name, little-endian numpy dtype, torch dtype)
DTYPES: dict[int, tuple[str, str, torch.dtype]] = {
    0: ("float32", "<f4", torch.float32),
    1: ("int8", "i1", torch.int8),
    2: ("int16", "<i2", torch.int16),
    3: ("int32", "<i4", torch.int32),
    4: ("float16", "<f2", torch.float16),
    5: ("bfloat16", "<u2", torch.bfloat16),
}
#: binary versions < 4 stored an item size instead of a dtype id
_ITEM_SIZE_DTYPE = {4: 0, 2: 2, 1: 1}
_FLOAT = {"float32", "float16", "bfloat16"}
_QUANTIZED = {"int8", "int16"}
#: decoder flags this conversion reproduces: CTranslate2 name -> required value
_DECODER_FLAGS = {"activation": 3, "pre_norm": 1, "scale_embeddings": 0, "alibi": 0, "start_from_zero_embedding": 0}
_ACTIVATIONS = {0: "relu", 1: "gelu_tanh", 2: "swish", 3: "gelu", 4: "gelu_sigmoid", 5: "tanh"}
_PART = re.compile(r"^model\.bin\.part(\d+)$")
_SPECIAL = ("<|endoftext|>", "<|startoftranscript|>", "<|translate|>", "<|transcribe|>", "<|startoflm|>",
            "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>")


class CT2FormatError(ValueError):
    """A CTranslate2 file fastsim cannot read or convert; the message names the file."""


# --------------------------------------------------------------------------------------------
# files


def model_files(*sources: str | os.PathLike) -> list[Path]:
    """The model file(s) in reading order: ``model.bin``, or ``model.bin.part1``, ``.part2``, ...
    gathered from every source (folders or files; the parts may be in different folders).
    Raises CT2FormatError if there is none, if a part number is missing or doubled, or if both a
    whole ``model.bin`` and parts are given."""
    if not sources:
        raise CT2FormatError("no CTranslate2 model given")
    whole: list[Path] = []
    parts: dict[int, list[Path]] = {}
    for src in sources:
        p = Path(src)
        if p.is_dir():
            candidates = sorted(p.iterdir())
        elif p.is_file():
            candidates = [p]
        else:
            raise CT2FormatError(f"{p}: no such file or folder")
        for c in candidates:
            if c.name == "model.bin" and c.is_file():
                whole.append(c)
            elif (m := _PART.match(c.name)) and c.is_file():
                parts.setdefault(int(m.group(1)), []).append(c)
    where = ", ".join(os.fspath(s) for s in sources)
    if whole and parts:
        raise CT2FormatError(f"{where}: holds both model.bin ({whole[0]}) and model.bin.part* files; give one of them")
    if len(whole) > 1:
        raise CT2FormatError(f"{where}: more than one model.bin ({', '.join(map(str, whole))})")
    if whole:
        return whole
    if not parts:
        raise CT2FormatError(f"{where}: no CTranslate2 model (model.bin or model.bin.part1, .part2, ...)")
    doubled = [f"part{n}" for n, ps in parts.items() if len(ps) > 1]
    if doubled:
        raise CT2FormatError(f"{where}: {', '.join(doubled)} found more than once ({', '.join(str(p) for n in parts for p in parts[n] if len(parts[n]) > 1)})")
    last = max(parts)
    missing = [n for n in range(1, last + 1) if n not in parts]
    if missing:
        have = ", ".join(str(parts[n][0]) for n in sorted(parts))
        raise CT2FormatError(f"{where}: model.bin.part{missing[0]} is missing (have {have}); the parts are concatenated in order, so all of part1..part{last} are needed")
    return [parts[n][0] for n in range(1, last + 1)]


def _side_file(files: Sequence[Path], extra: Sequence[str | os.PathLike], name: str) -> Path | None:
    """config.json / tokenizer.json: beside the first model file, else in any given folder."""
    for d in [files[0].parent, *(Path(e) if Path(e).is_dir() else Path(e).parent for e in extra)]:
        if (d / name).is_file():
            return d / name
    return None


class _Concat:
    """The files, concatenated, read at absolute offsets."""

    def __init__(self, files: Sequence[Path]):
        self.files = [Path(f) for f in files]
        self.sizes = [f.stat().st_size for f in self.files]
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64).tolist()
        self.total = self.starts[-1]
        self._handles: list[Any] = [None] * len(self.files)

    def read_at(self, offset: int, n: int) -> bytes:
        out = bytearray()
        while n > 0 and offset < self.total:
            i = next(k for k in range(len(self.files)) if offset < self.starts[k + 1])
            if self._handles[i] is None:
                self._handles[i] = open(self.files[i], "rb")
            fh = self._handles[i]
            fh.seek(offset - self.starts[i])
            chunk = fh.read(min(n, self.starts[i + 1] - offset))
            if not chunk:
                break
            out += chunk
            offset += len(chunk)
            n -= len(chunk)
        return bytes(out)

    def close(self) -> None:
        for i, fh in enumerate(self._handles):
            if fh is not None:
                fh.close()
            self._handles[i] = None


class _Cursor:
    """Sequential little-endian reads over a _Concat, buffered; skips without reading."""

    BUFFER = 1 << 16

    def __init__(self, data: _Concat, label: str):
        self.data, self.label, self.pos = data, label, 0
        self._buf, self._buf_at = b"", 0

    def take(self, n: int, what: str) -> bytes:
        lo = self.pos - self._buf_at
        if lo < 0 or lo + n > len(self._buf):
            self._buf, self._buf_at, lo = self.data.read_at(self.pos, max(n, self.BUFFER)), self.pos, 0
        out = self._buf[lo : lo + n]
        if len(out) < n:
            raise CT2FormatError(f"{self.label}: truncated: {what} needs {n} bytes at offset {self.pos}, "
                                 f"but the file ends at {self.data.total}")
        self.pos += n
        return out

    def skip(self, n: int, what: str) -> int:
        start = self.pos
        if start + n > self.data.total:
            raise CT2FormatError(f"{self.label}: truncated: {what} needs {n} bytes at offset {start}, "
                                 f"but the file ends at {self.data.total} ({start + n - self.data.total} bytes short)")
        self.pos += n
        return start

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return struct.unpack("<H", self.take(2, what))[0]

    def u32(self, what: str) -> int:
        return struct.unpack("<I", self.take(4, what))[0]

    def string(self, what: str) -> str:
        n = self.u16(f"the length of {what}")
        raw = self.take(n, what)
        try:
            return raw.split(b"\0", 1)[0].decode("utf-8")
        except UnicodeDecodeError:
            raise CT2FormatError(f"{self.label}: {what} at offset {self.pos - n} is not text (not a CTranslate2 file, or a corrupt one)") from None


@dataclass(frozen=True)
class Variable:
    """One variable of the file: its data are ``nbytes`` bytes at ``offset`` of the concatenation."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    offset: int
    nbytes: int


@dataclass
class CT2Checkpoint:
    """The index of a CTranslate2 model file (or parts): header, variables, aliases, config.json.

    Use as a context manager (or call ``close``); ``tensor(name)`` reads one variable."""

    files: list[Path]
    version: int
    spec: str
    revision: int
    variables: dict[str, Variable]
    aliases: dict[str, str]
    config: dict[str, Any] = field(default_factory=dict)
    config_file: Path | None = None
    tokenizer_file: Path | None = None
    _data: _Concat | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return _label(self.files)

    @classmethod
    def open(cls, *sources: str | os.PathLike) -> CT2Checkpoint:
        """Index the model found in sources (see ``model_files``); config.json and tokenizer.json
        are taken from beside the first file or any source folder."""
        files = model_files(*sources)
        data = _Concat(files)
        label = _label(files)
        try:
            cur = _Cursor(data, label)
            version = cur.u32("the binary version")
            if version not in VERSIONS:
                raise CT2FormatError(f"{label}: binary version {version} is not one this reader knows "
                                     f"({VERSIONS.start}-{VERSIONS.stop - 1}); not a CTranslate2 Whisper model, or a newer format")
            spec, revision = "", 1
            if version >= 2:
                spec = cur.string("the spec name")
                revision = cur.u32("the spec revision")
            if spec != SPEC:
                raise CT2FormatError(f"{label}: holds a CTranslate2 {spec or 'unnamed'} model, not Whisper ({SPEC})")
            count = cur.u32("the variable count")
            variables: dict[str, Variable] = {}
            for k in range(count):
                name = cur.string(f"the name of variable #{k}")
                rank = cur.u8(f"the rank of {name}")
                shape = tuple(struct.unpack(f"<{rank}I", cur.take(4 * rank, f"the shape of {name}")))
                if version >= 4:
                    type_id = cur.u8(f"the dtype of {name}")
                    nbytes = cur.u32(f"the byte count of {name}")
                else:
                    item = cur.u8(f"the item size of {name}")
                    if item not in _ITEM_SIZE_DTYPE:
                        raise CT2FormatError(f"{label}: variable {name}: unknown item size {item}")
                    type_id = _ITEM_SIZE_DTYPE[item]
                    nbytes = cur.u32(f"the element count of {name}") * item
                if type_id not in DTYPES:
                    raise CT2FormatError(f"{label}: variable {name}: unknown dtype id {type_id} "
                                         f"(known: {', '.join(f'{i} {d[0]}' for i, d in DTYPES.items())})")
                dtype = DTYPES[type_id][0]
                expect = math.prod(shape) * np.dtype(DTYPES[type_id][1]).itemsize
                if nbytes != expect:
                    raise CT2FormatError(f"{label}: variable {name}: shape {list(shape)} of {dtype} is {expect} bytes, "
                                         f"but the file says {nbytes}")
                offset = cur.skip(nbytes, f"the data of {name}")
                if name in variables:
                    raise CT2FormatError(f"{label}: variable {name} appears twice")
                variables[name] = Variable(name, shape, dtype, offset, nbytes)
            aliases: dict[str, str] = {}
            if version >= 3:
                for k in range(cur.u32("the alias count")):
                    alias = cur.string(f"alias #{k}")
                    aliases[alias] = cur.string(f"the target of alias {alias}")
            if cur.pos != data.total:
                raise CT2FormatError(f"{label}: {data.total - cur.pos} unexpected bytes after the end of the model "
                                     f"(at offset {cur.pos}): parts in the wrong order, or another file appended?")
        except BaseException:
            data.close()
            raise
        config_file = _side_file(files, sources, "config.json")
        config: dict[str, Any] = {}
        if config_file is not None:
            try:
                config = json.loads(config_file.read_text())
            except (OSError, ValueError) as e:
                data.close()
                raise CT2FormatError(f"{config_file}: not readable JSON ({e})") from None
        ckpt = cls(files, version, spec, revision, variables, aliases, config, config_file,
                   _side_file(files, sources, "tokenizer.json"), data)
        for alias in aliases:
            ckpt.resolve(alias)  # dangling or circular aliases fail here, by name
        return ckpt

    def __enter__(self) -> CT2Checkpoint:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._data is not None:
            self._data.close()

    def resolve(self, name: str) -> Variable:
        seen = [name]
        while name not in self.variables:
            if name not in self.aliases:
                via = f" (via alias {' -> '.join(seen)})" if len(seen) > 1 else ""
                raise CT2FormatError(f"{self.label}: variable {name} not found{via}")
            name = self.aliases[name]
            if name in seen:
                raise CT2FormatError(f"{self.label}: circular alias {' -> '.join(seen + [name])}")
            seen.append(name)
        return self.variables[name]

    def has(self, name: str) -> bool:
        return name in self.variables or name in self.aliases

    def tensor(self, name: str) -> torch.Tensor:
        """The variable as stored (its own dtype), a fresh CPU tensor."""
        var = self.resolve(name)
        if self._data is None:
            raise CT2FormatError(f"{self.label}: closed")
        raw = self._data.read_at(var.offset, var.nbytes)
        if len(raw) != var.nbytes:  # the file changed under us
            raise CT2FormatError(f"{self.label}: truncated: variable {var.name} ends past the end of the file")
        type_id = next(i for i, d in DTYPES.items() if d[0] == var.dtype)
        _, np_dtype, torch_dtype = DTYPES[type_id]
        arr = np.frombuffer(raw, dtype=np_dtype).reshape(var.shape)
        arr = arr.astype(np.dtype(np_dtype).newbyteorder("="), copy=True)  # native order, writable
        t = torch.from_numpy(arr)
        return t.view(torch.bfloat16) if torch_dtype == torch.bfloat16 else t

    def scalar(self, name: str) -> int | float:
        var = self.resolve(name)
        if math.prod(var.shape) != 1:
            raise CT2FormatError(f"{self.label}: variable {name} should be a scalar; it has shape {list(var.shape)}")
        return self.tensor(name).reshape(()).item()

    def is_quantized(self, name: str) -> bool:
        return self.resolve(name).dtype in _QUANTIZED

    def float_tensor(self, name: str, dtype: torch.dtype = torch.float32, quantized: str = "dequantize") -> torch.Tensor:
        """A float variable cast to dtype; a quantized one (int8/int16 with ``<name>_scale``)
        dequantized as q / scale (one scale per output row, or one for all), or refused."""
        var = self.resolve(name)
        if var.dtype in _FLOAT:
            return self.tensor(name).to(dtype)
        if var.dtype not in _QUANTIZED:
            raise CT2FormatError(f"{self.label}: variable {name} is {var.dtype}, expected floating-point weights")
        if quantized == "refuse":
            raise CT2FormatError(f"{self.label}: variable {name} is quantized ({var.dtype}); fastsim was told to refuse "
                                 f"quantized files (quantized='refuse'); convert from a float16/float32 file instead")
        if quantized != "dequantize":
            raise ValueError(f"quantized must be 'dequantize' or 'refuse'; got {quantized!r}")
        scale_name = f"{name}_scale"
        if not self.has(scale_name):
            raise CT2FormatError(f"{self.label}: variable {name} is quantized ({var.dtype}) but {scale_name} is missing")
        q = self.tensor(name).to(torch.float64)
        scale = self.tensor(scale_name).to(torch.float64)
        rows = q.shape[0] if q.dim() else 1
        if scale.numel() == 1:
            w = q / scale.reshape(())
        elif scale.dim() == 1 and scale.numel() == rows:
            w = (q.reshape(rows, -1) / scale[:, None]).reshape(q.shape)
        else:
            raise CT2FormatError(f"{self.label}: {scale_name} has shape {list(scale.shape)}; expected a scalar or one "
                                 f"scale per row of {name} ({rows})")
        return w.to(dtype)


def _label(files: Sequence[Path]) -> str:
    return " + ".join(os.fspath(f) for f in files)


# --------------------------------------------------------------------------------------------
# conversion


def _layers(ckpt: CT2Checkpoint, side: str) -> int:
    pattern = re.compile(rf"^{side}/layer_(\d+)/")
    found = {int(m.group(1)) for n in [*ckpt.variables, *ckpt.aliases] if (m := pattern.match(n))}
    n = max(found) + 1 if found else 0
    if set(range(n)) != found:
        missing = sorted(set(range(n)) - found)
        raise CT2FormatError(f"{ckpt.label}: {side} layer {missing[0]} is missing (layers {sorted(found)})")
    if n == 0:
        raise CT2FormatError(f"{ckpt.label}: no {side} layers")
    return n


def special_tokens(ckpt: CT2Checkpoint, vocab_size: int) -> dict[str, Any]:
    """Special token ids: from tokenizer.json's added tokens when there is one, else from the
    vocabulary size as OpenAI's tokenizer lays them out (51864 = English-only, more = multilingual)."""
    ids: dict[str, int] = {}
    languages: dict[str, int] = {}
    if ckpt.tokenizer_file is not None:
        try:
            added = json.loads(ckpt.tokenizer_file.read_text()).get("added_tokens", [])
        except (OSError, ValueError) as e:
            raise CT2FormatError(f"{ckpt.tokenizer_file}: not readable JSON ({e})") from None
        by_content = {a["content"]: int(a["id"]) for a in added if "content" in a and "id" in a}
        ids = {t: by_content[t] for t in _SPECIAL if t in by_content}
        if len(ids) == len(_SPECIAL):
            sot, translate = ids["<|startoftranscript|>"], ids["<|translate|>"]
            languages = {c: i for c, i in by_content.items() if sot < i < translate and re.fullmatch(r"<\|[a-z\-]+\|>", c)}
    if len(ids) != len(_SPECIAL):
        multilingual = vocab_size >= 51865
        n_lang = vocab_size - 51765 - int(multilingual)
        eot = 50257 if multilingual else 50256
        ids = {"<|endoftext|>": eot, "<|startoftranscript|>": eot + 1}
        nxt = eot + 2 + n_lang
        for t in _SPECIAL[2:]:
            ids[t] = nxt
            nxt += 1
        languages = {}
    bad = {t: i for t, i in ids.items() if not 0 <= i < vocab_size}
    if bad:
        raise CT2FormatError(f"{ckpt.label}: special token ids {bad} lie outside the vocabulary of {vocab_size}"
                             + (f" (from {ckpt.tokenizer_file})" if ckpt.tokenizer_file else ""))
    return {"ids": ids, "languages": languages, "multilingual": vocab_size >= 51865}


def whisper_config(ckpt: CT2Checkpoint):
    """The transformers WhisperConfig of the checkpoint (from its shapes, scalars and files)."""
    from transformers import WhisperConfig

    def shape(name: str) -> tuple[int, ...]:
        return ckpt.resolve(name).shape

    for flag, want in _DECODER_FLAGS.items():
        name = f"decoder/{flag}"
        if ckpt.has(name) and int(ckpt.scalar(name)) != want:
            got = int(ckpt.scalar(name))
            shown = _ACTIVATIONS.get(got, got) if flag == "activation" else got
            raise CT2FormatError(f"{ckpt.label}: {name} = {shown}; a Whisper decoder has {_ACTIVATIONS.get(want, want) if flag == 'activation' else want}, "
                                 f"which is what the Hugging Face model computes")
    qtype = ckpt.config.get("quantization_type")
    if qtype not in (None, 0, "ct2", "CT2"):
        raise CT2FormatError(f"{ckpt.label}: quantization_type {qtype!r} (AWQ) in {ckpt.config_file} is not supported; "
                             f"use a float16/float32 (or CTranslate2 int8) file")
    conv1 = shape("encoder/conv1/weight")
    if len(conv1) != 3:
        raise CT2FormatError(f"{ckpt.label}: encoder/conv1/weight has shape {list(conv1)}; expected (width, mel bins, 3)")
    d_model, mels = conv1[0], conv1[1]
    for key in ("num_mel_bins", "feature_size"):
        if key in ckpt.config and int(ckpt.config[key]) != mels:
            raise CT2FormatError(f"{ckpt.label}: {ckpt.config_file} says {key}={ckpt.config[key]}, but encoder/conv1 takes {mels} mel bins")
    vocab, emb_dim = shape("decoder/embeddings/weight")
    enc_layers, dec_layers = _layers(ckpt, "encoder"), _layers(ckpt, "decoder")
    heads = {}
    for side in ("encoder", "decoder"):
        if not ckpt.has(f"{side}/num_heads"):
            raise CT2FormatError(f"{ckpt.label}: {side}/num_heads is missing")
        heads[side] = int(ckpt.scalar(f"{side}/num_heads"))
        if heads[side] < 1 or d_model % heads[side]:
            raise CT2FormatError(f"{ckpt.label}: {side}/num_heads = {heads[side]} does not divide the width {d_model}")
    if emb_dim != d_model:
        raise CT2FormatError(f"{ckpt.label}: decoder embeddings are {emb_dim} wide, the encoder {d_model}")
    tokens = special_tokens(ckpt, vocab)
    ids = tokens["ids"]
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    cfg = WhisperConfig(
        vocab_size=vocab,
        num_mel_bins=mels,
        d_model=d_model,
        encoder_layers=enc_layers,
        encoder_attention_heads=heads["encoder"],
        decoder_layers=dec_layers,
        decoder_attention_heads=heads["decoder"],
        encoder_ffn_dim=shape("encoder/layer_0/ffn/linear_0/weight")[0],
        decoder_ffn_dim=shape("decoder/layer_0/ffn/linear_0/weight")[0],
        max_source_positions=shape("encoder/position_encodings/encodings")[0],
        max_target_positions=shape("decoder/position_encodings/encodings")[0],
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=_tied(ckpt),
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=sot,
    )
    cfg.fastsim_source = {"format": "ctranslate2", "spec": ckpt.spec, "revision": ckpt.revision,
                          "binary_version": ckpt.version, "files": [f.name for f in ckpt.files]}
    return cfg


def _tied(ckpt: CT2Checkpoint) -> bool:
    if not ckpt.has("decoder/projection/weight"):
        return True  # nothing else to project with
    return ckpt.resolve("decoder/projection/weight").name == ckpt.resolve("decoder/embeddings/weight").name


def generation_config(ckpt: CT2Checkpoint, cfg):
    """What ``WhisperForConditionalGeneration.generate`` needs: special ids, the tokens config.json
    suppresses, alignment heads, and (multilingual models) the language and task tokens."""
    from transformers import GenerationConfig

    tokens = special_tokens(ckpt, cfg.vocab_size)
    ids = tokens["ids"]
    eot = ids["<|endoftext|>"]
    c = ckpt.config
    kw: dict[str, Any] = dict(
        decoder_start_token_id=ids["<|startoftranscript|>"],
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        max_length=cfg.max_target_positions,
        suppress_tokens=list(c.get("suppress_ids") or []),
        begin_suppress_tokens=list(c.get("suppress_ids_begin") or [220, eot]),
        no_timestamps_token_id=ids["<|notimestamps|>"],
        prev_sot_token_id=ids["<|startofprev|>"],
        is_multilingual=tokens["multilingual"],
        max_initial_timestamp_index=50,
        return_timestamps=False,
    )
    if c.get("alignment_heads"):
        kw["alignment_heads"] = [list(map(int, h)) for h in c["alignment_heads"]]
    if tokens["multilingual"]:
        kw["task_to_id"] = {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}
        if tokens["languages"]:
            kw["lang_to_id"] = dict(tokens["languages"])
    return GenerationConfig(**kw)


def state_dict(ckpt: CT2Checkpoint, cfg, *, dtype: torch.dtype = torch.float32,
               quantized: str = "dequantize") -> dict[str, torch.Tensor]:
    """Hugging Face ``WhisperForConditionalGeneration`` parameters from the checkpoint. Every
    non-scalar variable must be used (an unknown one is an error, not silently dropped)."""
    used: set[str] = set()
    sd: dict[str, torch.Tensor] = {}
    D = cfg.d_model

    def get(name: str, shape: tuple[int, ...]) -> torch.Tensor:
        t = ckpt.float_tensor(name, dtype, quantized)
        if tuple(t.shape) != tuple(shape):
            raise CT2FormatError(f"{ckpt.label}: variable {name} has shape {list(t.shape)}; the config implies {list(shape)}")
        used.add(ckpt.resolve(name).name)
        used.add(name)
        if ckpt.has(f"{name}_scale"):
            used.add(f"{name}_scale")
            used.add(ckpt.resolve(f"{name}_scale").name)
        return t

    def linear(hf: str, ct: str, out: int, inp: int, bias: bool = True) -> None:
        sd[f"{hf}.weight"] = get(f"{ct}/weight", (out, inp))
        if bias:
            sd[f"{hf}.bias"] = get(f"{ct}/bias", (out,))

    def norm(hf: str, ct: str) -> None:
        sd[f"{hf}.weight"] = get(f"{ct}/gamma", (D,))
        sd[f"{hf}.bias"] = get(f"{ct}/beta", (D,))

    def split(hf_names: Sequence[str], ct: str) -> None:
        k = len(hf_names)
        w = get(f"{ct}/weight", (k * D, D))
        b = get(f"{ct}/bias", (k * D,))
        for j, hf in enumerate(hf_names):
            sd[f"{hf}.weight"] = w[j * D : (j + 1) * D].clone()
            if not hf.endswith("k_proj"):  # HF's k_proj has no bias; a key bias cancels in the softmax
                sd[f"{hf}.bias"] = b[j * D : (j + 1) * D].clone()

    enc, dec = "model.encoder", "model.decoder"
    sd[f"{enc}.conv1.weight"] = get("encoder/conv1/weight", (D, cfg.num_mel_bins, 3))
    sd[f"{enc}.conv1.bias"] = get("encoder/conv1/bias", (D,))
    sd[f"{enc}.conv2.weight"] = get("encoder/conv2/weight", (D, D, 3))
    sd[f"{enc}.conv2.bias"] = get("encoder/conv2/bias", (D,))
    sd[f"{enc}.embed_positions.weight"] = get("encoder/position_encodings/encodings", (cfg.max_source_positions, D))
    for i in range(cfg.encoder_layers):
        ct, hf = f"encoder/layer_{i}", f"{enc}.layers.{i}"
        split([f"{hf}.self_attn.q_proj", f"{hf}.self_attn.k_proj", f"{hf}.self_attn.v_proj"], f"{ct}/self_attention/linear_0")
        linear(f"{hf}.self_attn.out_proj", f"{ct}/self_attention/linear_1", D, D)
        norm(f"{hf}.self_attn_layer_norm", f"{ct}/self_attention/layer_norm")
        linear(f"{hf}.fc1", f"{ct}/ffn/linear_0", cfg.encoder_ffn_dim, D)
        linear(f"{hf}.fc2", f"{ct}/ffn/linear_1", D, cfg.encoder_ffn_dim)
        norm(f"{hf}.final_layer_norm", f"{ct}/ffn/layer_norm")
    norm(f"{enc}.layer_norm", "encoder/layer_norm")

    sd[f"{dec}.embed_tokens.weight"] = get("decoder/embeddings/weight", (cfg.vocab_size, D))
    sd[f"{dec}.embed_positions.weight"] = get("decoder/position_encodings/encodings", (cfg.max_target_positions, D))
    for i in range(cfg.decoder_layers):
        ct, hf = f"decoder/layer_{i}", f"{dec}.layers.{i}"
        split([f"{hf}.self_attn.q_proj", f"{hf}.self_attn.k_proj", f"{hf}.self_attn.v_proj"], f"{ct}/self_attention/linear_0")
        linear(f"{hf}.self_attn.out_proj", f"{ct}/self_attention/linear_1", D, D)
        norm(f"{hf}.self_attn_layer_norm", f"{ct}/self_attention/layer_norm")
        linear(f"{hf}.encoder_attn.q_proj", f"{ct}/attention/linear_0", D, D)
        split([f"{hf}.encoder_attn.k_proj", f"{hf}.encoder_attn.v_proj"], f"{ct}/attention/linear_1")
        linear(f"{hf}.encoder_attn.out_proj", f"{ct}/attention/linear_2", D, D)
        norm(f"{hf}.encoder_attn_layer_norm", f"{ct}/attention/layer_norm")
        linear(f"{hf}.fc1", f"{ct}/ffn/linear_0", cfg.decoder_ffn_dim, D)
        linear(f"{hf}.fc2", f"{ct}/ffn/linear_1", D, cfg.decoder_ffn_dim)
        norm(f"{hf}.final_layer_norm", f"{ct}/ffn/layer_norm")
    norm(f"{dec}.layer_norm", "decoder/layer_norm")
    if cfg.tie_word_embeddings:
        sd["proj_out.weight"] = sd[f"{dec}.embed_tokens.weight"]
        if ckpt.has("decoder/projection/weight"):
            used.add("decoder/projection/weight")
    else:
        sd["proj_out.weight"] = get("decoder/projection/weight", (cfg.vocab_size, D))
    if ckpt.has("decoder/projection/bias"):
        b = ckpt.float_tensor("decoder/projection/bias", torch.float64)
        if b.abs().max().item() != 0:
            raise CT2FormatError(f"{ckpt.label}: decoder/projection/bias is not zero; Hugging Face's Whisper proj_out has no bias")
        used.add(ckpt.resolve("decoder/projection/bias").name)

    unused = sorted(n for n, v in ckpt.variables.items() if n not in used and math.prod(v.shape) > 1)
    if unused:
        raise CT2FormatError(f"{ckpt.label}: variable(s) this conversion does not know: {', '.join(unused[:8])}"
                             + (f" and {len(unused) - 8} more" if len(unused) > 8 else "")
                             + "; refusing rather than dropping them")
    return sd


def convert(ckpt: CT2Checkpoint, *, dtype: torch.dtype = torch.float32, quantized: str = "dequantize"):
    """The checkpoint as a ``transformers`` ``WhisperForConditionalGeneration`` in eval mode, its
    output projection tied to the token embeddings (when the file ties them)."""
    from transformers import WhisperForConditionalGeneration

    cfg = whisper_config(ckpt)
    sd = state_dict(ckpt, cfg, dtype=dtype, quantized=quantized)
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(cfg)
    grads = {n: p.requires_grad for n, p in model.named_parameters(remove_duplicate=False)}
    expected = set(grads) | {n for n, _ in model.named_buffers()}
    if set(sd) != expected:
        raise CT2FormatError(f"{ckpt.label}: conversion gives {sorted(set(sd) ^ expected)[:6]} out of step with "
                             f"transformers' WhisperForConditionalGeneration (a transformers version this converter does not know?)")
    model.load_state_dict(sd, strict=True, assign=True)
    if cfg.tie_word_embeddings:
        model.proj_out.weight = model.model.decoder.embed_tokens.weight
    for n, p in model.named_parameters(remove_duplicate=False):
        p.requires_grad_(grads[n])
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise CT2FormatError(f"{ckpt.label}: conversion left {left[:4]} unset")
    model.generation_config = generation_config(ckpt, cfg)
    return model.eval()


# --------------------------------------------------------------------------------------------
# cache


def cache_root() -> Path:
    """``$FASTSIM_CACHE`` or ``~/.cache/fastsim``, then ``models`` (synthesized speech goes to ``speech``)."""
    root = os.environ.get("FASTSIM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "fastsim")
    return Path(root) / "models"


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest() if hasattr(hashlib, "file_digest") else _sha256_loop(f)


def _sha256_loop(f) -> str:  # Python < 3.11
    h = hashlib.sha256()
    while chunk := f.read(1 << 20):
        h.update(chunk)
    return h.hexdigest()


def cache_key(sources: Sequence[str | os.PathLike], *, dtype: torch.dtype = torch.float32, quantized: str = "dequantize") -> str:
    """sha256 over the model files (sizes and contents, in order), config.json, tokenizer.json,
    the dtype, the quantized policy and the converter version."""
    files = model_files(*sources)
    h = hashlib.sha256(f"fastsim-ct2-whisper v{CONVERTER_VERSION} {dtype} {quantized}\n".encode())
    for f in files:
        h.update(f"{f.stat().st_size} {_sha256(f)}\n".encode())
    for name in ("config.json", "tokenizer.json"):
        side = _side_file(files, sources, name)
        h.update(f"{name} {_sha256(side) if side else '-'}\n".encode())
    return h.hexdigest()


@dataclass
class LoadInfo:
    """How ``load_ctranslate2_whisper`` got its model: from the cache or converted, and timings (s)."""

    cache_dir: Path | None
    from_cache: bool
    hash_seconds: float
    convert_seconds: float = 0.0
    save_seconds: float = 0.0
    load_seconds: float = 0.0


#: the info of the last load_ctranslate2_whisper call (for reports and tests)
last_load: LoadInfo | None = None


def _dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    if dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        raise ValueError(f"dtype must be a floating-point torch dtype; got {dtype!r}")
    return dtype


def load_ctranslate2_whisper(source: str | os.PathLike | Sequence[str | os.PathLike], *,
                             dtype: torch.dtype | str = torch.float32, quantized: str = "dequantize",
                             cache: bool = True, cache_dir: str | os.PathLike | None = None):
    """A CTranslate2 Whisper model (a folder with model.bin or model.bin.part*, or several folders /
    files holding the parts) as a ``transformers`` ``WhisperForConditionalGeneration`` (eval mode,
    on CPU, in ``dtype``).

    With ``cache=True`` the converted model is kept under ``cache_dir`` (default ``cache_root()``)
    in a folder named by ``cache_key``; later calls load it from there. The folder is a
    ``save_pretrained`` folder plus ``tokenizer.json`` (when the source has one), so
    ``WhisperForConditionalGeneration.from_pretrained`` and ``whisper_tokenizer`` read it directly.
    Timings of the call are in ``last_load``."""
    global last_load
    sources = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    dtype = _dtype(dtype)
    if quantized not in ("dequantize", "refuse"):
        raise ValueError(f"quantized must be 'dequantize' or 'refuse'; got {quantized!r}")
    t0 = time.perf_counter()
    if not cache:
        with CT2Checkpoint.open(*sources) as ckpt:
            t1 = time.perf_counter()
            model = convert(ckpt, dtype=dtype, quantized=quantized)
        last_load = LoadInfo(None, False, 0.0, time.perf_counter() - t1)
        return model
    from transformers import WhisperForConditionalGeneration

    key = cache_key(sources, dtype=dtype, quantized=quantized)
    t1 = time.perf_counter()
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    final = root / f"whisper-ct2-{key[:24]}"
    info = LoadInfo(final, final.is_dir(), t1 - t0)
    if not final.is_dir():
        with CT2Checkpoint.open(*sources) as ckpt:
            model = convert(ckpt, dtype=dtype, quantized=quantized)
            tokenizer = ckpt.tokenizer_file
            source_info = {"files": [os.fspath(f) for f in ckpt.files], "key": key,
                           "config": os.fspath(ckpt.config_file) if ckpt.config_file else None,
                           "converter_version": CONVERTER_VERSION, "dtype": str(dtype), "quantized": quantized}
        t2 = time.perf_counter()
        info.convert_seconds = t2 - t1
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale(root, final.name)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root))
        try:
            model.save_pretrained(tmp)
            if tokenizer is not None:
                shutil.copyfile(tokenizer, tmp / "tokenizer.json")
            (tmp / "fastsim_source.json").write_text(json.dumps(source_info, indent=1) + "\n")
            try:
                os.rename(tmp, final)  # atomic; fails if another process got there first
            except OSError:
                if not final.is_dir():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        info.save_seconds = time.perf_counter() - t2
        last_load = info
        return model.to(dtype).eval()
    t2 = time.perf_counter()
    model = WhisperForConditionalGeneration.from_pretrained(final).to(dtype)  # (no dtype keyword: transformers 4 and 5)
    info.load_seconds = time.perf_counter() - t2
    last_load = info
    return model.eval()


def _remove_stale(root: Path, name: str, age_seconds: float = 3600.0) -> None:
    """Temporary folders of this cache entry left by killed runs (older than an hour)."""
    now = time.time()
    for d in root.glob(f".{name}.*.tmp"):
        try:
            if now - d.stat().st_mtime > age_seconds:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            pass


def is_ctranslate2_dir(path: str | os.PathLike) -> bool:
    """Whether path is a folder holding a CTranslate2 model (model.bin or model.bin.part*)."""
    p = Path(path)
    return p.is_dir() and ((p / "model.bin").is_file() or any(_PART.match(c.name) for c in p.iterdir()))


def whisper_tokenizer(folder_or_file: str | os.PathLike):
    """``WhisperTokenizerFast`` from a ``tokenizer.json`` (or a folder holding one), offline."""
    from transformers import WhisperTokenizerFast

    p = Path(folder_or_file)
    f = p / "tokenizer.json" if p.is_dir() else p
    if not f.is_file():
        raise FileNotFoundError(f"{p}: no tokenizer.json")
    return WhisperTokenizerFast(tokenizer_file=os.fspath(f))


__all__ = [
    "CT2Checkpoint", "CT2FormatError", "Variable", "LoadInfo", "model_files", "whisper_config", "generation_config",
    "state_dict", "convert", "cache_key", "cache_root", "load_ctranslate2_whisper", "is_ctranslate2_dir",
    "whisper_tokenizer", "special_tokens",
]

