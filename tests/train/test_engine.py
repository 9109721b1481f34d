"""The training loop: LR schedule, exact resume, Ctrl-C, corrupt checkpoints, NaN losses, DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_training import STEPS, make_tiny_task, train_tiny
from torch import nn
from torch.utils.data import Dataset

from salign_cli.device import resolve_device, uses_channels_last
from salign_cli.errors import InputError
from salign_cli.train import engine
from salign_cli.train.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    resume_meta,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from salign_cli.train.engine import (
    NonFiniteLossError,
    RuntimeOptions,
    SilentReporter,
    TrainConfig,
    TrainingInterrupted,
    learning_rate,
    seconds_per_step,
    train,
)

HERE = Path(__file__).resolve().parent


class _Notes(SilentReporter):
    def __init__(self) -> None:
        self.notes: list[str] = []

    def on_message(self, message: str) -> None:
        self.notes.append(message)


class _Signal:
    """A reporter that sends ``signum`` to this process after step ``at``."""

    def __init__(self, at: int, signum: int = signal.SIGINT) -> None:
        self.at, self.signum, self.messages = at, signum, []

    def on_step(self, step, total, metrics):
        if step == self.at:
            os.kill(os.getpid(), self.signum)

    def on_message(self, message):
        self.messages.append(message)


class _Regression(nn.Module):
    """loss = mean((w·x − y)²); a NaN input makes the loss NaN."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(3))

    def forward(self, batch):
        return {"loss": ((batch["x"] @ self.weight - batch["y"]) ** 2).mean()}


class _Samples(Dataset):
    def __init__(self, nan_from: int | None = None) -> None:
        self.nan_from = nan_from

    def __getitem__(self, index):
        x = torch.tensor([1.0, index % 5, (index % 3) - 1.0])
        if self.nan_from is not None and index >= self.nan_from:
            x[0] = float("nan")
        return {"x": x, "y": torch.tensor(2.0 + index % 5)}


class _RegressionTask:
    slices_per_sample = 1

    def __init__(self, nan_from: int | None = None) -> None:
        self.module = _Regression()
        self.dataset = _Samples(nan_from)


def _logged(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [
        {k: v for k, v in row.items() if k not in ("slices_per_s", "elapsed_s")} for row in rows
    ]


def test_learning_rate_warmup_then_cosine():
    config = TrainConfig(steps=11, batch_size=1, lr=1.0, warmup_steps=2, min_lr_ratio=0.1)
    # warm-up: (step + 1) / 2; then cosine over steps 2..10 (8 intervals) from 1.0 to 0.1
    assert learning_rate(0, config) == pytest.approx(0.5)
    assert learning_rate(1, config) == pytest.approx(1.0)
    assert learning_rate(2, config) == pytest.approx(1.0)
    assert learning_rate(6, config) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway: cos(π/2) = 0
    assert learning_rate(10, config) == pytest.approx(0.1)


def test_rng_state_round_trips_through_json():
    state = json.loads(json.dumps(rng_state()))
    first = (torch.rand(3), __import__("numpy").random.rand(2), __import__("random").random())
    set_rng_state(state)
    second = (torch.rand(3), __import__("numpy").random.rand(2), __import__("random").random())
    assert torch.equal(first[0], second[0]) and (first[1] == second[1]).all()
    assert first[2] == second[2]


def test_a_new_run_into_a_used_folder_starts_clean(tmp_path):
    # Issue 24, bug 4: a new run appended to the old metrics.jsonl and kept its checkpoints,
    # which a later --resume would have taken for this run's.
    train(
        make_tiny_task(),
        TrainConfig(steps=6, batch_size=4, log_every=1, checkpoint_every=2),
        tmp_path,
    )
    kept = [p.name for p in list_checkpoints(tmp_path)]
    reporter = _Notes()
    config = TrainConfig(steps=3, batch_size=4, log_every=1, checkpoint_every=100)
    train(make_tiny_task(), config, tmp_path, reporter=reporter)
    assert [row["step"] for row in map(json.loads, (tmp_path / "metrics.jsonl").open())] == [
        1,
        2,
        3,
    ]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000003.json"]
    assert reporter.notes == [
        f"{tmp_path}: removed an earlier run's metrics.jsonl and {len(kept)} checkpoint(s) "
        "before starting a new run here"
    ]


def test_interrupt_then_resume_equals_an_uninterrupted_run(tmp_path):
    config = TrainConfig(steps=6, batch_size=4, log_every=1, checkpoint_every=100)
    straight = make_tiny_task()
    train(straight, config, tmp_path / "straight")

    first = make_tiny_task()
    with pytest.raises(TrainingInterrupted, match="after step 3/6"):
        train(first, config, tmp_path / "split", reporter=_Signal(at=3))
    assert latest_checkpoint(tmp_path / "split").step == 3
    resumed = make_tiny_task(
        init_seed=1
    )  # different init: everything must come from the checkpoint
    result = train(resumed, config, tmp_path / "split", resume=True)

    assert (result.start_step, result.steps) == (3, 6)
    expected = straight.module.state_dict()
    for name, tensor in resumed.module.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
    assert _logged(tmp_path / "split") == _logged(tmp_path / "straight")  # losses and lr, 1..6
    straight_optimizer = load_file(str(latest_checkpoint(tmp_path / "straight").tensors_path))
    resumed_optimizer = load_file(str(latest_checkpoint(tmp_path / "split").tensors_path))
    assert straight_optimizer.keys() == resumed_optimizer.keys()
    assert all(torch.equal(straight_optimizer[k], resumed_optimizer[k]) for k in straight_optimizer)


def test_resume_removes_the_temporaries_of_a_run_killed_mid_write(tmp_path):
    # kill -9 while a checkpoint is being written leaves `.step-N.partial-<pid>-*`; the process
    # is gone, so no one else will ever rename or delete it
    config = TrainConfig(steps=4, batch_size=2, checkpoint_every=100)
    with pytest.raises(TrainingInterrupted):
        train(_RegressionTask(), config, tmp_path, reporter=_Signal(at=2))
    dead_pid = 2**22 + 12345  # above Linux's default pid_max: no such process
    stale = [
        tmp_path / "checkpoints" / f".step-00000003.partial-{dead_pid}-0123456789ab.safetensors",
        tmp_path / f".report.json.partial-{dead_pid}-0123456789ab",
    ]
    live = tmp_path / "checkpoints" / f".step-00000003.partial-{os.getpid()}-0123456789ab.json"
    for path in (*stale, live):
        path.write_bytes(b"half")
    train(_RegressionTask(), config, tmp_path, resume=True)
    assert [path.exists() for path in stale] == [False, False]
    assert live.exists()  # a live writer's file is its own business


def test_sigterm_saves_a_checkpoint(tmp_path):
    config = TrainConfig(steps=10, batch_size=2, checkpoint_every=100)
    with pytest.raises(TrainingInterrupted) as caught:
        train(_RegressionTask(), config, tmp_path, reporter=_Signal(2, signal.SIGTERM))
    assert caught.value.exit_code == 130
    assert latest_checkpoint(tmp_path).step == 2
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handler restored


def test_only_the_newest_checkpoints_are_kept_and_corruption_falls_back(tmp_path):
    config = TrainConfig(steps=6, batch_size=2, checkpoint_every=2, keep_checkpoints=2)
    train(_RegressionTask(), config, tmp_path)
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "step-00000004.json",
        "step-00000006.json",
    ]

    newest = tmp_path / "checkpoints" / "step-00000006.safetensors"
    data = bytearray(newest.read_bytes())
    data[-1] ^= 0xFF  # same size, different bytes
    newest.write_bytes(bytes(data))
    notes = []
    assert latest_checkpoint(tmp_path, notes.append).step == 4
    assert "sha256" in notes[0] and "step-00000006" in notes[0]

    newest.write_bytes(bytes(data[:100]))  # truncated
    notes.clear()
    assert latest_checkpoint(tmp_path, notes.append).step == 4
    assert "size" in notes[0]

    result = train(_RegressionTask(), config, tmp_path, resume=True, reporter=_Signal(at=-1))
    assert (result.start_step, result.steps) == (4, 6)

    for path in (tmp_path / "checkpoints").glob("*.safetensors"):
        path.write_bytes(b"garbage")
    with pytest.raises(InputError, match="every checkpoint is corrupt"):
        latest_checkpoint(tmp_path)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    # batch size 2: step 3 (1-based) reads samples 4 and 5, and sample 4 is NaN
    config = TrainConfig(steps=10, batch_size=2, checkpoint_every=1)
    with pytest.raises(NonFiniteLossError, match="step 3") as caught:
        train(_RegressionTask(nan_from=4), config, tmp_path)
    assert "step-00000002.safetensors" in str(caught.value)
    assert "--lr" in str(caught.value)
    assert latest_checkpoint(tmp_path).step == 2
    weights = load_file(str(latest_checkpoint(tmp_path).tensors_path))["model/weight"]
    assert torch.isfinite(weights).all()


def test_unknown_or_missing_devices_are_input_errors():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(InputError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA"):
            resolve_device("cuda:0")


class _ConvLayouts(nn.Module):
    """A 3×3 conv regression that records whether each step's input arrived channels_last."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.input_was_channels_last: list[bool] = []

    def forward(self, batch):
        image = batch["image"]
        self.input_was_channels_last.append(image.is_contiguous(memory_format=torch.channels_last))
        return {"loss": (self.conv(image) - 1.0).pow(2).mean()}


class _Images(Dataset):
    def __getitem__(self, index):
        return {"image": torch.full((2, 4, 5), float(index % 3))}


class _LayoutTask:
    slices_per_sample = 1

    def __init__(self) -> None:
        self.module = _ConvLayouts()
        self.dataset = _Images()


def test_cpu_training_runs_channels_last_and_mps_keeps_the_default_layout(tmp_path):
    assert uses_channels_last(torch.device("cpu")) and uses_channels_last(torch.device("cuda", 0))
    assert not uses_channels_last(torch.device("mps"))
    task = _LayoutTask()
    train(
        task, TrainConfig(steps=2, batch_size=2), tmp_path / "run",
        runtime=RuntimeOptions(device="cpu"),
    )  # fmt: skip
    # a [2, 2, 4, 5] batch is NCHW-contiguous as collated: only the loop's conversion makes it NHWC
    assert task.module.input_was_channels_last == [True, True]
    assert task.module.conv.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_on_the_same_global_batch(tmp_path):
    train_tiny(tmp_path / "single")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
        str(HERE / "tiny_training.py"), str(tmp_path / "ddp"),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    finished = subprocess.run(
        command, capture_output=True, text=True, encoding="utf-8", timeout=120, env=env
    )
    assert finished.returncode == 0, finished.stderr[-3000:]

    single, ddp = _logged(tmp_path / "single"), _logged(tmp_path / "ddp")
    assert len(single) == len(ddp) == STEPS
    for one, two in zip(single, ddp, strict=True):
        assert two["loss"] == pytest.approx(one["loss"], rel=1e-5, abs=1e-6)
        assert two["lr"] == one["lr"]
    single_weights = load_file(str(latest_checkpoint(tmp_path / "single").tensors_path))
    ddp_weights = load_file(str(latest_checkpoint(tmp_path / "ddp").tensors_path))
    # Adam divides by sqrt(v): for near-zero gradients a last-bit difference in the all-reduce
    # sum can move a weight by up to ~lr (1e-3), so weights get lr-scale tolerance; losses above
    # (which depend on the step-1 weights) agree to 1e-5.
    for name, tensor in single_weights.items():
        if name.startswith("model/"):
            torch.testing.assert_close(ddp_weights[name], tensor, rtol=0, atol=5e-4)


@pytest.mark.parametrize(
    ("task_config", "stage", "other"),
    [
        ({"stage": "finetune", "labelled_cases": []}, "finetune", "pretrain"),
        ({"stage": "pretrain", "scans": []}, "pretrain", "finetune"),
        ({"scans": []}, "pretrain", "finetune"),  # pre-training before the key was written
    ],
)
def test_a_run_resumes_only_as_its_own_stage(tmp_path, task_config, stage, other):
    model = nn.Linear(2, 2)
    save_checkpoint(
        tmp_path, 1, model, torch.optim.SGD(model.parameters(), lr=0.1),
        extra={"task_config": task_config}, keep=1,
    )  # fmt: skip
    assert resume_meta(tmp_path, stage)["task_config"] == task_config
    with pytest.raises(InputError) as raised:
        resume_meta(tmp_path, other)
    assert str(raised.value) == (
        f"resume_from {tmp_path}: a {stage} run, not a {other} run; continue it with "
        f"salign {stage} --resume-from {tmp_path}"
    )


def test_seconds_per_step_is_the_median_of_the_timed_steps_after_a_warm_up(monkeypatch):
    # each forward advances a fake clock: 5 s (the untimed warm-up), then 1, 3 and 2 s
    now = [0.0]
    durations = iter([5.0, 1.0, 3.0, 2.0])
    monkeypatch.setattr(engine.time, "perf_counter", lambda: now[0])

    class Timed(_Regression):
        def forward(self, batch):
            now[0] += next(durations)
            return super().forward(batch)

    class Recorded(_Samples):
        def __init__(self) -> None:
            super().__init__()
            self.asked: list[int] = []

        def __getitem__(self, index):
            self.asked.append(index)
            return super().__getitem__(index)

    module, samples = Timed(), Recorded()
    config = TrainConfig(steps=100, batch_size=2, lr=0.1)
    seconds = seconds_per_step(module, samples, config, torch.device("cpu"), timed_steps=3)
    assert seconds == pytest.approx(2.0)  # median of 1, 3, 2; the warm-up's 5 s left out
    assert samples.asked == list(range(8))  # the samples of the run's first four steps
    assert torch.equal(module.weight, torch.zeros(3))  # a copy trained: the run is unchanged
