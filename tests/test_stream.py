"""The training stream: determinism, DDP slicing, workers, task balance, crops and flips."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from restorekit.data.build import build_train_stream
from restorekit.data.stream import TaskSource, TrainStream, augment_op, random_crop
from restorekit.errors import DataError, RecipeError
from restorekit.io.image_files import write_image


class Pairs(torch.utils.data.Dataset):
    """In-memory pairs where lq = gt / 2: alignment survives cropping and flipping."""

    def __init__(self, count: int, size: tuple[int, int] = (20, 24), seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.images = [torch.rand(3, *size, generator=gen) for _ in range(count)]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        gt = self.images[index]
        return {"lq": gt / 2, "gt": gt, "task": "pairs", "name": str(index)}


def stream(batch_size: int = 4, world_size: int = 1, rank: int = 0, num_workers: int = 0, **kw) -> TrainStream:
    tasks = [TaskSource("a", Pairs(3, seed=1), 1.0), TaskSource("b", Pairs(5, seed=2), 2.0)]
    return TrainStream(
        tasks,
        batch_size=batch_size,
        seed=7,
        rank=rank,
        world_size=world_size,
        patch_size=kw.pop("patch_size", 8),
        num_workers=num_workers,
        **kw,
    )


def equal(x: dict, y: dict) -> bool:
    return torch.equal(x["lq"], y["lq"]) and torch.equal(x["gt"], y["gt"]) and x["task"] == y["task"]


def test_batches_depend_only_on_the_step():
    s = stream()
    first = list(itertools.islice(s.batches(0), 4))
    assert first[0]["lq"].shape == (4, 3, 8, 8) and first[0]["lq"].dtype == torch.float32
    assert len(first[0]["task"]) == 4 and set(first[0]["task"]) <= {"a", "b"}
    assert equal(next(stream().batches(3)), first[3]), "resuming at step 3 replays step 3"
    assert not equal(first[0], first[1])
    for batch in first:
        assert torch.equal(batch["lq"], batch["gt"] / 2), "lq and gt are cropped and flipped alike"


def test_world_size_slices_concatenate_to_the_global_batch():
    whole = stream(batch_size=6).batch(5)
    parts = [stream(batch_size=3, world_size=2, rank=r).batch(5) for r in range(2)]
    assert torch.equal(torch.cat([p["lq"] for p in parts]), whole["lq"])
    assert torch.equal(torch.cat([p["gt"] for p in parts]), whole["gt"])
    assert parts[0]["task"] + parts[1]["task"] == whole["task"]


def test_workers_give_the_same_batches():
    plain = list(itertools.islice(stream(num_workers=0).batches(2), 3))
    workers = list(itertools.islice(stream(num_workers=2).batches(2), 3))
    assert all(equal(p, w) for p, w in zip(plain, workers))


def test_task_balance_follows_shares():
    s = stream()
    draws = 6000
    counts = {"a": 0, "b": 0}
    for j in range(draws):
        gen = torch.Generator().manual_seed(j)
        counts[s.choose_task(gen).name] += 1
    expected = draws / 3
    assert abs(counts["a"] - expected) < 4 * (draws * (1 / 3) * (2 / 3)) ** 0.5
    # and the full sampling path agrees
    tasks = [t for step in range(60) for t in s.batch(step)["task"]]
    assert 0.2 < tasks.count("a") / len(tasks) < 0.47


def test_small_images_are_padded_and_augment_covers_8_symmetries():
    small = torch.rand(3, 5, 6)
    lq, gt = random_crop([small / 2, small], 8, torch.Generator().manual_seed(0))
    assert gt.shape == (3, 8, 8) and torch.equal(lq, gt / 2)
    x = torch.arange(16.0).view(1, 4, 4)
    outs = {tuple(augment_op(x, op).flatten().tolist()) for op in range(8)}
    assert len(outs) == 8
    s = stream(patch_size=32)
    assert s.batch(0)["gt"].shape == (4, 3, 32, 32)


def test_augment_off_keeps_orientation():
    ramp = torch.linspace(0, 1, 24).expand(3, 20, 24).contiguous()
    s = TrainStream([TaskSource("r", [{"lq": ramp, "gt": ramp}], 1.0)], batch_size=8, patch_size=8, augment=False)
    gt = s.batch(0)["gt"]
    assert (gt[..., 1:] > gt[..., :-1]).all(), "columns still increase left to right"


def write_clean(folder: Path, count: int) -> None:
    for i in range(count):
        write_image(folder / f"{i}.png", torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(i)))


def test_build_train_stream_repeat_weight_and_synthetic(tmp_path, caplog):
    write_clean(tmp_path / "one", 2)
    write_clean(tmp_path / "two", 6)
    cfg = {
        "root": str(tmp_path),
        "patch_size": 8,
        "train": {
            "noise": {
                "dataset": {"type": "synthetic", "path": "one", "degradation": {"type": "noise", "sigma": 50}},
                "repeat": 6,
            },
            "haze": {"dataset": {"type": "synthetic", "path": "two", "degradation": "haze"}},
        },
    }
    with caplog.at_level("INFO", logger="restorekit.data"):
        s = build_train_stream(cfg, batch_size=4, seed=0)
    assert s.probabilities == pytest.approx({"noise": 12 / 18, "haze": 6 / 18})
    assert "train task noise: 2 images, repeat 6" in caplog.text
    batch = s.batch(0)
    assert batch["lq"].shape == (4, 3, 8, 8) and not torch.equal(batch["lq"], batch["gt"])
    cfg["train"] = {k: {"dataset": v["dataset"], "weight": w} for (k, v), w in zip(cfg["train"].items(), (1, 3))}
    assert build_train_stream(cfg, 2, 0).probabilities == pytest.approx({"noise": 0.25, "haze": 0.75})


def test_build_train_stream_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"data.train.noise: task 'noise' has no images"):
        build_train_stream(
            {"train": {"noise": {"dataset": {"type": "synthetic", "path": str(tmp_path / "empty")}}}}, 2, 0
        )
    write_clean(tmp_path / "c", 1)
    spec = {"type": "synthetic", "path": str(tmp_path / "c")}
    with pytest.raises(RecipeError, match="weight for all or repeat for all"):
        build_train_stream({"train": {"a": {"dataset": spec, "weight": 1}, "b": {"dataset": spec}}}, 2, 0)
    with pytest.raises(RecipeError, match=r"data.train.a.repeat must be a number > 0"):
        build_train_stream({"train": {"a": {"dataset": spec, "repeat": 0}}}, 2, 0)
    with pytest.raises(RecipeError, match="data.train is empty"):
        build_train_stream({"patch_size": 8}, 2, 0)
    with pytest.raises(RecipeError, match=r"data.train.a: unknown dataset 'synthetik'; did you mean 'synthetic'"):
        build_train_stream({"train": {"a": {"dataset": {"type": "synthetik"}}}}, 2, 0)


# -- seeds: each draw replayed from its keys ------------------------------------------------------
def test_derive_seed_is_numpys_seed_sequence_of_the_keys() -> None:
    import numpy as np

    from restorekit.data.seeding import derive_seed

    for keys in [(7,), (7, 3, 2), (0, 1 << 40), (-1, 5)]:
        state = np.random.SeedSequence([k & (2**64 - 1) for k in keys]).generate_state(2, np.uint32)
        assert derive_seed(*keys) == (int(state[0]) << 31) ^ int(state[1])
    assert len({derive_seed(7, s, j) for s in range(4) for j in range(4)}) == 16


def test_a_sample_replays_from_the_seed_the_step_and_the_index() -> None:
    """Task by share (a: 1/3, b: 2/3), image, symmetry, degradation seed, then the crop: in that order."""
    from restorekit.data.seeding import derive_seed

    s = stream(augment=True)
    for step, index in [(0, 0), (3, 2), (11, 1)]:
        gen = torch.Generator().manual_seed(derive_seed(7, step, index))
        task = "a" if float(torch.rand((), generator=gen)) < 1 / 3 else "b"
        images = Pairs(3, seed=1) if task == "a" else Pairs(5, seed=2)
        image = images.images[int(torch.randint(len(images), (), generator=gen))]
        op = int(torch.randint(8, (), generator=gen))
        torch.randint(0, 2**62, (), generator=gen, dtype=torch.int64)  # the degradation's seed
        top, left = int(torch.randint(20 - 8 + 1, (), generator=gen)), int(torch.randint(24 - 8 + 1, (), generator=gen))
        crop = image[:, top : top + 8, left : left + 8]
        turned = torch.rot90(crop, op % 4, dims=(-2, -1))
        want = turned.flip(-1) if op >= 4 else turned
        got = s.sample(step, index)
        assert got["task"] == task and torch.equal(got["gt"], want) and torch.equal(got["lq"], want / 2)


def test_each_worker_seeds_the_global_generators_from_the_rank_and_its_id(monkeypatch: pytest.MonkeyPatch) -> None:
    """The DataLoader's worker_init_fn, called as a worker would be: seed derive_seed(derive_seed(seed, rank), id)."""
    import random

    import numpy as np

    from restorekit.data.seeding import derive_seed

    made: list[dict] = []

    def loader(dataset, **kwargs):  # noqa: ANN001, ANN202 - stands in for torch's DataLoader
        made.append(kwargs)
        return iter(())

    monkeypatch.setattr(torch.utils.data, "DataLoader", loader)
    threads = torch.get_num_threads()
    state = torch.get_rng_state(), np.random.get_state(), random.getstate()
    try:
        for rank, worker in [(0, 0), (0, 1), (1, 0), (1, 3)]:
            list(stream(batch_size=2, world_size=2, rank=rank, num_workers=2).batches(0))
            seed = derive_seed(derive_seed(7, rank), worker)
            made[-1]["worker_init_fn"](worker)
            assert random.random() == random.Random(seed).random()
            assert np.random.rand() == np.random.RandomState(seed % 2**32).rand()
            assert torch.equal(torch.rand(3), torch.rand(3, generator=torch.Generator().manual_seed(seed)))
    finally:
        torch.set_num_threads(threads)
        torch.set_rng_state(state[0]), np.random.set_state(state[1]), random.setstate(state[2])
