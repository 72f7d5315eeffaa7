"""Mid-epoch resume: a loader restarted from a state yields exactly the rest of the epoch."""

import hashlib

import pytest
from torch.utils.data import DataLoader

import pipeline.loader.dataset as ld
from pipeline.errors import ConfigError
from pipeline.loader import LatentLoaderConfig, LatentShardDataset
from pipeline.loader.dataset import consumed_by_worker, resume_point


def _name(y, t) -> str:
    return f"{hashlib.sha256(y.numpy().tobytes()).hexdigest()[:12]}:{int(t)}"


def _batches(loader) -> list[list[str]]:
    return [[_name(y, t) for y, t in zip(ys, ts, strict=True)] for ys, ts in loader]


def _dataset(root, epoch=1) -> LatentShardDataset:
    ds = LatentShardDataset(LatentLoaderConfig(str(root), train=True, seed=3, shuffle_buffer=4))
    ds.set_epoch(epoch)
    return ds


def test_consumed_by_worker_follows_the_dataloaders_turns():
    # workers of 5, 2 and 4 samples, batches of 2: turns 0, 1, 2, 0, (1 is out) 2, 0
    assert consumed_by_worker(0, 2, [5, 2, 4]) == [0, 0, 0]
    assert consumed_by_worker(4, 2, [5, 2, 4]) == [4, 2, 2]
    assert consumed_by_worker(5, 2, [5, 2, 4]) == [4, 2, 4]
    assert consumed_by_worker(6, 2, [5, 2, 4]) == [5, 2, 4]  # worker 0's last batch is partial
    assert consumed_by_worker(99, 2, [5, 2, 4]) == [5, 2, 4]


@pytest.mark.parametrize("rank", [0, 1])
@pytest.mark.parametrize("batch", [1, 2])
def test_resume_after_k_batches_over_two_workers_and_two_ranks(latent_root, monkeypatch, rank, batch):
    monkeypatch.setattr(ld, "_rank_world", lambda: (rank, 2))
    full = _batches(DataLoader(_dataset(latent_root), batch_size=batch, num_workers=2))
    assert sum(len(b) for b in full) == 5  # this rank's half of 10; its 2 workers hold 3 and 2
    for k in range(len(full) + 1):
        ds = _dataset(latent_root, epoch=0)  # a fresh process knows nothing but the state
        ds.load_state_dict({"epoch": 1, "batches": k, "batch_size": batch, "workers": 2})
        rest = _batches(DataLoader(ds, batch_size=batch, num_workers=2))
        assert rest == full[k:], k


def test_resume_point_with_dropped_partial_batches():
    # workers of 5, 2 and 4 samples, batches of 2, each worker's partial batch dropped:
    # they make 2, 1 and 2 batches; turns 0, 1, 2, 0, (1 is out) 2
    assert resume_point(3, 2, [5, 2, 4], drop_last=True) == ([2, 2, 2], 0)
    assert resume_point(5, 2, [5, 2, 4], drop_last=True) == ([4, 2, 4], 0)
    assert resume_point(99, 2, [5, 2, 4], drop_last=True)[0] == [4, 2, 4]


@pytest.mark.parametrize("batch", [2, 3])
def test_resume_with_drop_last_after_every_batch_count(latent_root, batch):
    """What detection training asks for: a DataLoader that drops each worker's last partial batch."""
    full = _batches(DataLoader(_dataset(latent_root), batch_size=batch, num_workers=2, drop_last=True))
    assert len(full) == _dataset(latent_root).num_batches(batch, 2, drop_last=True)
    for k in range(len(full) + 1):
        ds = _dataset(latent_root, epoch=0)
        ds.load_state_dict({"epoch": 1, "batches": k, "batch_size": batch, "workers": 2, "drop_last": True})
        assert _batches(DataLoader(ds, batch_size=batch, num_workers=2, drop_last=True)) == full[k:], k


def test_a_streams_own_state_resumes_it(latent_root):
    """The per-stream form (what a StatefulDataLoader snapshots in each worker)."""
    ds = _dataset(latent_root)
    it = iter(ds)
    head = [_name(*next(it)) for _ in range(4)]
    state = ds.state_dict()
    assert state == {"epoch": 1, "yielded": 4}
    tail = [_name(*s) for s in it]
    again = _dataset(latent_root, epoch=0)
    again.load_state_dict(state)
    assert [_name(*s) for s in again] == tail and len(head + tail) == 10


def test_the_next_epoch_after_a_resume_is_whole(latent_root):
    ds = _dataset(latent_root)
    ds.load_state_dict({"epoch": 1, "yielded": 7})
    assert len(list(ds)) == 3
    ds.set_epoch(2)
    assert len(list(ds)) == 10


def test_a_state_from_another_worker_count_is_refused(latent_root):
    ds = _dataset(latent_root)
    ds.load_state_dict({"epoch": 1, "batches": 2, "batch_size": 2, "workers": 3})
    with pytest.raises(ConfigError, match="3 worker"):
        list(ds)
    with pytest.raises(ConfigError, match="epoch and yielded"):
        ds.load_state_dict({"epoch": 1})
