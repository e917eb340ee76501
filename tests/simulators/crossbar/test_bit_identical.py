"""Fixed-seed training gives the same final parameters, bit for bit, as the code these checksums came from.

Each variant trains one epoch of digits (``hil train --seed 3 --threads 1``) with each estimator and
hashes the final parameters (SHA-256 over every tensor's shape and bytes). The checksums were recorded
from the crossbar before its physics became composable effects (the noise bank's when it was added);
floating point differs between CPU kernels, so they are checked where they were recorded (the torch
build and CPU capability below).
Print the current ones with ``python tests/simulators/crossbar/test_bit_identical.py``.
"""

import hashlib
import sys
from pathlib import Path

import pytest
import torch

from hil.cli import main
from hil.runs import RunFolder

RECORDED_ON = ("2.13.0+cpu", "AVX512")
VARIANTS: dict[str, list[str]] = {
    "ideal": ["--device", "sim://crossbar"],
    "rram": ["--device", "sim://crossbar?preset=rram"],
    "pcm": ["--device", "sim://crossbar?preset=pcm"],
    "stuck, drift, tiles, link": [
        "--device", "sim://crossbar?preset=pcm&stuck_at_min=0.025&stuck_at_max=0.025&drift_nu=0.1"
                    "&tile_rows=24&ir_drop=0.1&link_bytes_per_second=1e6&link_latency=1e-4"],
    "cnn ideal": ["--device", "sim://crossbar", "--conv", "8c3p2", "--hidden", ""],
    "cnn pcm": ["--device", "sim://crossbar?preset=pcm", "--conv", "8c3p2", "--hidden", ""],
    "rram, noise bank": ["--device", "sim://crossbar?preset=rram&noise=bank"],
}
CHECKSUMS: dict[tuple[str, str], str] = {
    ('ideal', 'activity'): 'd405873269d3fbcee02924c98f5e4d910c855f3a0df687694db8433d261c6034',
    ('rram', 'activity'): 'de538137a714b1207a04711198cfa7ffc8465970f677cc0712706d1084e0d852',
    ('pcm', 'activity'): 'fab6323d44b2b963a3b7d044f9bf3620081faa06a39ba2f6ad59e83c3e69b97c',
    ('stuck, drift, tiles, link', 'activity'): 'd90df8a67e108125ad6fe0e31b70fc7cfa7ca69e55dbfb9b45a926a8484fd6c3',
    ('cnn ideal', 'activity'): '0e29cf879af7a6f6aa0d3e3603bb2df7692b39f8f5993725d95fd1c3a7d01a16',
    ('cnn pcm', 'activity'): '653aeecba0427f040ec46ed9584bc756a311fb8d66a24ab3ec5c0ae352deae15',
    ('rram, noise bank', 'activity'): '2cb88ffc1096839e764a2e10533afc82138d26f1dab5f3aff6af0deab840b7af',
    ('ideal', 'weight'): 'a874485eae7c0f1226e564be4a3de5be88aae13b2db89ed4ec8153ffff9a48d2',
    ('rram', 'weight'): '2180b1489d591300c768099acff58637df842ca74c4796c03745ba5e9b5fbe04',
    ('pcm', 'weight'): '96c2dc13357b919fd0487eb2aa182c86b2c9da732150d199d826e8e80619c534',
    ('stuck, drift, tiles, link', 'weight'): 'b80d2a3ce79cac5062095c8b7cda07a2ab9c8123ef7e5e83c9aae8b09a09ef60',
    ('cnn ideal', 'weight'): 'fbc82e9ee66bec51df1a980bcac90e9111905ba8aa8a692c665ede263f1b439f',
    ('cnn pcm', 'weight'): 'b03c30f4bbabdccc454274e9447355319696b2b84bf25bae02cd766730e6fc6f',
    ('rram, noise bank', 'weight'): '3eda35636e112e23ab41811d31f2ea235199113d779b886dc3735262c5ab93be',
}


def final_parameters_sha256(run_dir: Path, argv: list[str], estimator: str, epochs: int = 1) -> str:
    """Train (or resume) ``hil train ARGV`` to ``epochs`` in ``run_dir``; SHA-256 of the final parameters."""
    threads = torch.get_num_threads()
    try:
        resume = (run_dir / "checkpoint.pt").exists()
        start = ["--resume", str(run_dir)] if resume else [*argv, "--run-dir", str(run_dir)]
        assert main(["train", *start, "--estimator", estimator, "--epochs", str(epochs), "--seed", "3",
                     "--threads", "1", "--no-progress"]) == 0
    finally:
        torch.set_num_threads(threads)
    digest = hashlib.sha256()
    for t in RunFolder(run_dir).load_checkpoint()["model"]["tensors"]:
        digest.update(str(tuple(t.shape)).encode())
        digest.update(t.contiguous().numpy().tobytes())
    return digest.hexdigest()


def _environment() -> tuple[str, str]:
    return torch.__version__, torch.backends.cpu.get_cpu_capability()


@pytest.mark.parametrize("estimator", ["activity", "weight"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_final_parameters_match_the_recorded_checksum(tmp_path, variant, estimator):
    if _environment() != RECORDED_ON:
        pytest.skip(f"checksums recorded on torch {RECORDED_ON[0]}, CPU {RECORDED_ON[1]}; this is {_environment()}")
    assert final_parameters_sha256(tmp_path / "run", VARIANTS[variant], estimator) == CHECKSUMS[variant, estimator]


@pytest.mark.parametrize("noise", ["exact", "bank"])
@pytest.mark.parametrize("estimator", ["activity", "weight"])
def test_a_resumed_noisy_run_ends_where_an_uninterrupted_one_does(tmp_path, estimator, noise):
    device, url = VARIANTS["stuck, drift, tiles, link"]
    argv = [device, f"{url}&noise={noise}"]
    straight = final_parameters_sha256(tmp_path / "straight", argv, estimator, epochs=2)
    final_parameters_sha256(tmp_path / "resumed", argv, estimator, epochs=1)
    assert final_parameters_sha256(tmp_path / "resumed", argv, estimator, epochs=2) == straight


if __name__ == "__main__":
    import tempfile

    print(f"# torch {_environment()[0]}, CPU {_environment()[1]}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        for est in ("activity", "weight"):
            for name, args in VARIANTS.items():
                sha = final_parameters_sha256(Path(tmp) / f"{name}-{est}", args, est)
                print(f"    ({name!r}, {est!r}): {sha!r},")
