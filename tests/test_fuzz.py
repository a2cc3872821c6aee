"""Short, deterministic fuzzing of the parsers that face untrusted bytes (the long run:
``benchmarks/fuzz_parsers.py``; docs/reliability.md). Each input runs in a worker process with a
memory limit and a time budget; it must end in a record or a clean error."""

from __future__ import annotations

from pathlib import Path

import pytest
from fuzz_harness import Sandbox, generated_seeds, mutate, real_seeds, signed_seeds
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXAMPLES = 150  # per target; a few seconds each on a loaded machine
SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def sandbox():
    sb = Sandbox()
    yield sb
    sb.close()


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, dict[str, bytes]]:
    gen = generated_seeds()
    real = real_seeds(limit_bytes=700_000)  # the smaller real files keep the CI run short
    embedded, sidecars = signed_seeds(tmp_path_factory.mktemp("fuzz-keys"), gen)
    return {
        "decode": gen | real,
        "decode-libspng": {k: v for k, v in (gen | real).items() if v[:8] == b"\x89PNG\r\n\x1a\n"},
        "evidence": gen | real | embedded,
        "c2pa": embedded
        | {k: v for k, v in real.items() if "c2pa-public-testfiles" in k}
        | {"gen.png": gen["gen.png"]},
        "sidecar": sidecars,
        "assets": gen,
    }


def _check(outcome, target: str, name: str, data: bytes) -> None:
    what = f"{target} on a mutation of {name} ({len(data)} bytes)"
    assert outcome.kind == "clean", f"{what}: {outcome.kind}\n{outcome.detail}"


def test_seeds_themselves_parse(sandbox, seeds):
    for name, data in seeds["decode"].items():
        out = sandbox.call("decode", data)
        assert out.kind == "clean" and out.detail == "record", (name, out)
    for name, data in seeds["c2pa"].items():
        out = sandbox.call("c2pa", data)
        assert out.kind == "clean", (name, out)
    for name, data in seeds["sidecar"].items():
        asset = seeds["assets"][name.split("/", 1)[1]]
        assert sandbox.call("sidecar", data, asset).detail == "record: present", name


@pytest.mark.parametrize("target", ["decode", "decode-libspng", "evidence", "c2pa", "sidecar"])
def test_fuzz_parser(sandbox, seeds, target):
    if target == "decode-libspng":
        pytest.importorskip("pyspng")
    names = sorted(seeds[target])
    assert names, f"no seeds for {target}"

    @SETTINGS
    @given(st.sampled_from(names), st.randoms(use_true_random=False))
    def run(name, rnd):
        data = mutate(seeds[target][name], rnd)
        extra = seeds["assets"][name.split("/", 1)[1]] if target == "sidecar" else None
        _check(sandbox.call(target, data, extra), target, name, data)

    run()


def test_sandbox_reports_hangs_and_memory_blowups():
    """The harness itself: a hang and an allocation past the limit are findings, and the worker comes back."""
    sb = Sandbox(memory_limit=1 << 30, budget=2.0)
    try:
        assert sb.call("_hang", b"").kind == "hang"
        assert sb.call("_alloc", b"", str(4 << 30).encode()).kind == "memory"
        assert sb.call("unknown-target", b"").kind == "exception"
        assert sb.call("decode", b"\x89PNG\r\n\x1a\n").detail == "error: InputError"
    finally:
        sb.close()


REGRESSIONS = sorted((Path(__file__).parent / "data" / "fuzz-regressions").glob("*.bin"))


@pytest.mark.parametrize("case", REGRESSIONS, ids=[p.stem for p in REGRESSIONS])
def test_fuzz_finding_is_a_clean_error_now(case, sandbox):
    """Inputs the long run found (docs/reliability.md), named <target>-<input index>.bin."""
    from lida_plugin.decode import decode_bytes
    from lida_plugin.errors import InputError

    target = case.stem.split("-")[0]
    data = case.read_bytes()
    if target == "decode":
        with pytest.raises(InputError, match="fuzz-input: "):
            decode_bytes(data, "fuzz-input")
    out = sandbox.call(target, data)
    assert out.kind == "clean", out.detail
