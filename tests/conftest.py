"""Test setup: Triton's CPU interpreter when there is no GPU, hypothesis profiles, the gpu marker,
and an opt-in time limit per test (FASTSIM_TEST_TIMEOUT; pytest-timeout is not on every machine)."""

import faulthandler
import os
import signal

import torch

if not torch.cuda.is_available():
    # Must be set before triton is first imported: Triton kernels then run on CPU tensors.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "default",
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("thorough", parent=settings.get_profile("default"), max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules of tiny models: one torch thread is as fast, and far faster on a machine shared
    with other jobs. Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# FASTSIM_TEST_TIMEOUT=SECONDS (opt-in; bench/device.sh sets it): a test whose body runs longer
# fails with TestTimeout, and the run goes on with the next test. SIGALRM interrupts Python code
# between bytecodes and a C call (a CUDA sync, a kernel) when it returns; if one never returns,
# faulthandler prints every thread's stack 30 s later so the hang is visible in the log.
_TEST_TIMEOUT = float(os.environ.get("FASTSIM_TEST_TIMEOUT") or 0)


class TestTimeout(BaseException):
    """A BaseException, so neither hypothesis (it would shrink on) nor `except Exception` in a test swallows it."""

    __test__ = False  # not a test class, despite its name


if _TEST_TIMEOUT > 0 and hasattr(signal, "SIGALRM"):

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(item):
        def expire(signum, frame):
            raise TestTimeout(f"{item.nodeid} ran longer than FASTSIM_TEST_TIMEOUT={_TEST_TIMEOUT:g} s")

        previous = signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, _TEST_TIMEOUT, 5.0)  # and every 5 s after, should one be swallowed
        faulthandler.dump_traceback_later(_TEST_TIMEOUT + 30, exit=False)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            faulthandler.cancel_dump_traceback_later()
            signal.signal(signal.SIGALRM, previous)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A test that needs espeak-ng (the offline speech) is skipped, not failed, on a machine
    without it (the GPU machine has none); CI installs it, so there these tests run."""
    outcome = yield
    report = outcome.get_result()
    if call.excinfo is not None and report.failed:
        from fastsim.speech.synth import SynthesisError, espeak_available

        if call.excinfo.errisinstance(SynthesisError) and not espeak_available():
            report.outcome = "skipped"
            report.longrepr = (str(item.path), item.location[1] or 0, "skipped: espeak-ng is not installed")
