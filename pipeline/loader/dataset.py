"""`LatentShardDataset`: an IterableDataset of ``(ŷ float32 [M, h, w], target)``.

Works with a plain ``torch.utils.data.DataLoader`` (workers, pin_memory, persistent
workers). Entropy decoding runs in the worker processes: CompressAI's coder holds the GIL,
so parallelism comes from processes. Ranks (torch.distributed) and workers get disjoint,
equal-sized slices of a seeded, per-epoch shard order.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass

import torch
from torch.utils.data import IterableDataset, get_worker_info

from pipeline.codec.codec import Codec
from pipeline.errors import ConfigError, DatasetError, LatentShardsError
from pipeline.loader import stages
from pipeline.loader.cache import CachedSample, LatentCache
from pipeline.loader.targets import (
    TARGETS,
    ScaleAug,
    build_target,
    choose_crop,
    crop_latent,
    member_scale,
    pack_payload,
)
from pipeline.shards.dataset import LatentDataset
from pipeline.shards.tar import ShardFault

log = logging.getLogger(__name__)

#: source formats whose keys group by class (a class folder's files sort together)
CLASS_FOLDERS = ("imagefolder", "imagenet")


@dataclass(frozen=True)
class LatentLoaderConfig:
    root: str  # dataset root (any fsspec URL)
    split: str = "train"
    train: bool = True  # random crop + flip + shuffle; else centre crop, fixed order
    window: tuple[int, int] | None = (14, 14)  # latent crop (14x14 ≈ 224 px); None: whole grid
    seed: int = 0
    shuffle_buffer: int = 256
    strict: bool = False  # raise (a DatasetError) on any corrupt tar, member or sample instead of skipping it
    cache: str | None = None  # local directory of the warm decoded-latent cache; None: no cache
    cache_max_bytes: int = 20 * 2**30  # evict least-recently-used shards beyond this
    target: str = "class"  # "class": the class index; "detection" / "segmentation": a dict
    min_visible: float = 0.3  # detection: a cropped box keeps at least this share of its area
    augment: ScaleAug | None = None  # training: a RandomResizedCrop-like region resampled to the window
    #: training: draw one of these encodings of each image per epoch (1.0: the image itself; the
    #: others are `convert --scales` members, which the dataset must hold); None: the image itself
    members: tuple[float, ...] | None = None

    def __post_init__(self):
        if self.target not in TARGETS:
            raise ConfigError(f"target is one of {', '.join(TARGETS)}, not {self.target!r}")
        if self.members is not None and not self.members:
            raise ConfigError("members names at least one scale (1.0: the image itself)")
        if self.members is not None and set(self.members) != {1.0} and self.cache:
            raise ConfigError("drawing scale members each epoch and the warm cache do not go together yet "
                              "(the cache holds one ŷ per sample): leave out --cache or the members policy")


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class LatentShardDataset(IterableDataset):
    def __init__(self, cfg: LatentLoaderConfig, codec: Codec | None = None):
        super().__init__()
        self.cfg = cfg
        self.data = LatentDataset.open(cfg.root)
        if codec is not None:
            self.data.load_codec(codec)  # refuses a codec with another fingerprint, naming both
        shards = self.data.manifest.shards_of(cfg.split)
        if not shards:
            raise LatentShardsError(f"{cfg.root} has no samples in split {cfg.split!r}; splits: "
                                    f"{', '.join(self.data.manifest.splits)}")
        self.shards = [(self.data.layout.shard_tar(s.name), s.name, s.samples) for s in shards]
        self._shard_sha = {s.name: s.tar_sha256 for s in shards}
        self._shard_bytes = {s.name: s.tar_bytes for s in shards}
        self.cache = None
        if cfg.cache:
            self.cache = LatentCache.for_dataset(cfg.cache, self.data, cfg.cache_max_bytes, cfg.target)
            # before any worker starts (they then find the file ready); evicts shards that left the dataset
            # (every split's shards: the train and val loaders share one cache file)
            self.cache.prepare(s.tar_sha256 for s in self.data.manifest.shards)
        self.classes = list(self.data.manifest.classes)
        m = self.data.manifest
        if cfg.train and m.shard_order == "sorted" and m.source_format in CLASS_FOLDERS \
                and len(self.classes) > 1:
            log.warning("%s holds its shards in key order (`convert --order sorted`, and every dataset made "
                        "before `--order hashed` became the default): its class folders then fill each shard "
                        "with a few classes, which the shard shuffle and a %d-sample buffer cannot mix, and "
                        "training suffers; convert it again into a new OUT", cfg.root, cfg.shuffle_buffer)
        if cfg.members is not None and cfg.train:
            held = {1.0, *self.data.manifest.preprocessing.get("scales", ())}
            if not set(cfg.members) <= held:
                raise ConfigError(f"{cfg.root} holds the encodings at scale(s) {sorted(held)}, not "
                                  f"{sorted(set(cfg.members) - held)}: convert it with --scales "
                                  f"{','.join(str(v) for v in cfg.members if v != 1.0)}")
        self.epoch = 0
        self._iters = 0  # iterations of this copy since set_epoch (see set_epoch)
        self._codec = codec
        self._yielded = 0  # samples this copy has yielded in its current pass (state_dict)
        self._pass_epoch = 0
        self._resume: dict | None = None  # what load_state_dict asked to skip

    # -- sizes ------------------------------------------------------------------------------
    @property
    def total(self) -> int:
        return sum(n for _, _, n in self.shards)

    def __len__(self) -> int:
        """Samples this rank yields per epoch (equal on every rank)."""
        return self.total // _rank_world()[1]

    def set_epoch(self, epoch: int) -> None:
        """Seed the next epoch's shuffles and crops.

        Persistent DataLoader workers hold copies made before this call; they count their
        own iterations instead, so epoch ``e`` is seeded the same way in both cases.
        """
        self.epoch, self._iters = epoch, 0

    def num_batches(self, batch_size: int, workers: int, drop_last: bool = False) -> int:
        """Batches one epoch yields on this rank: each worker batches its own part (and with
        ``drop_last`` drops its own last partial batch)."""
        per, w = len(self), max(1, workers)
        parts = [per * (i + 1) // w - per * i // w for i in range(w)]
        return sum(n // batch_size if drop_last else -(-n // batch_size) for n in parts)

    # -- mid-epoch resume -------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Where this copy's stream stands: its epoch and the samples it has yielded in it.

        Inside a DataLoader worker (what torchdata's ``StatefulDataLoader`` snapshots) that is
        the worker's own count. A training loop with a plain DataLoader records instead the
        batches it consumed: ``{"epoch", "batches", "batch_size", "workers"}`` (see
        `load_state_dict`).
        """
        return {"epoch": self._pass_epoch, "yielded": self._yielded}

    def load_state_dict(self, state: dict) -> None:
        """Continue epoch ``state["epoch"]`` at the exact next sample.

        Either ``{"epoch", "yielded"}``, one stream's own count (a worker's, or the whole
        rank's without workers), or ``{"epoch", "batches", "batch_size", "workers"}``: the
        batches a plain DataLoader with that many workers handed over, from which each worker
        works out its own share (the DataLoader takes batches from its workers in turn); add
        ``"drop_last": True`` when the DataLoader drops each worker's last partial batch.
        The skipped samples are produced and dropped, so shuffles and crops stay those of an
        uninterrupted run.
        """
        if "yielded" not in state and not {"batches", "batch_size", "workers"} <= set(state):
            raise ConfigError("a loader state holds epoch and yielded, or epoch, batches, batch_size "
                              f"and workers; got {sorted(state)}")
        self.set_epoch(int(state["epoch"]))
        self._resume = dict(state)

    def _resume_role(self, epoch: int, wid: int, nworkers: int, sizes: list[int]) -> tuple[int, int]:
        """(which worker's part this worker plays, samples it drops first) to resume ``epoch``
        where a state left off. A fresh DataLoader asks worker 0 first; the interrupted one
        would have asked the worker whose turn came next, so the parts rotate by that turn."""
        r = self._resume
        if r is None or int(r["epoch"]) != epoch:
            return wid, 0
        if "yielded" in r:
            return wid, int(r["yielded"])
        if max(1, int(r["workers"])) != nworkers:
            raise ConfigError(f"the loader state was taken with {r['workers']} worker(s), this loader has "
                              f"{nworkers}; resume with the same --workers")
        consumed, turn = resume_point(int(r["batches"]), int(r["batch_size"]), sizes,
                                      bool(r.get("drop_last", False)))
        role = (wid + turn) % nworkers
        return role, consumed[role]

    # -- decoding ---------------------------------------------------------------------------
    def shard_sha256(self, name: str) -> str:
        """The manifest's sha256 of shard ``name``: what the warm cache keys it by."""
        return self._shard_sha[name]

    def codec(self) -> Codec:
        if self._codec is None:
            self._codec = self.data.load_codec()
        return self._codec

    def _target(self, sample: dict) -> int | bytes:
        """The class index (-1 for an unlabelled sample, ignored by the training loss), or for
        detection and segmentation the sample's JSON and mask (`targets.pack_payload`), turned
        into a target dict once the crop is known."""
        if self.cfg.target != "class":
            return pack_payload(sample["json"], sample.get("mask.png"))
        cls = sample.get("cls")
        return int(cls) if cls is not None else -1

    def __getitem__(self, key: str) -> tuple[torch.Tensor, int]:
        """Random access by key through the index's tar offsets (no scan)."""
        row = self.data.row(key)
        y = self.codec().decode_y(self.data.latent_bytes(key), max_pixels=self.data.max_pixels)
        return y, row["label"] if row["label"] is not None else -1

    def __iter__(self):
        rank, world = _rank_world()
        info = get_worker_info()
        wid, nworkers = (info.id, info.num_workers) if info else (0, 1)
        epoch = self.epoch + self._iters
        self._iters += 1
        order = list(range(len(self.shards)))
        if self.cfg.train:
            random.Random(self.cfg.seed * 1_000_003 + epoch).shuffle(order)
        # this rank's equal share, then this worker's part of it
        rank_slices = stages.assign_slices(self.shards, order, rank, world)
        parts = [(s.url, s.name, s.stop - s.start) for s in rank_slices]
        offset = {s.name: s.start for s in rank_slices}
        by_worker = [stages.assign_slices(parts, list(range(len(parts))), w, nworkers, drop_remainder=False)
                     for w in range(nworkers)]
        role, skip = self._resume_role(epoch, wid, nworkers,
                                       [sum(s.stop - s.start for s in part) for part in by_worker])
        slices = [stages.ShardSlice(w.url, w.name, offset[w.name] + w.start, offset[w.name] + w.stop,
                                    self._shard_bytes[w.name]) for w in by_worker[role]]
        self._pass_epoch, self._yielded = epoch, 0
        for i, sample in enumerate(self._stream(slices, epoch, rank, role)):
            if i < skip:
                continue
            self._yielded = i + 1
            yield sample

    def _stream(self, slices: list[stages.ShardSlice], epoch: int, rank: int, wid: int):
        """This worker's samples of the epoch, in order: decoded, shuffled, cropped, padded."""
        rng = random.Random(hash((self.cfg.seed, epoch, rank, wid))) if self.cfg.train else None
        items = self.decoded(slices, self.codec(), epoch)
        if rng is not None:
            items = stages.shuffle(items, self.cfg.shuffle_buffer, rng)
        expected, yielded = sum(s.stop - s.start for s in slices), 0
        for y_hat, target in items:
            yielded += 1
            crop = choose_crop((y_hat.shape[1], y_hat.shape[2]), self.cfg.window, rng, self.cfg.augment)
            if self.cfg.target != "class":
                target = build_target(self.cfg.target, target, crop, self.cfg.min_visible)
            yield crop_latent(y_hat, crop), target
        if yielded < expected:
            log.warning("epoch %d, rank %d, worker %d: %d sample(s) skipped as corrupt or unreadable",
                        epoch, rank, wid, expected - yielded)
            if self.cfg.window is not None:
                # Placeholders (target -1, ignored by the loss) keep every rank's batch count equal,
                # so DDP never waits forever for a rank that lost samples.
                filler = torch.zeros(self.data.manifest.latent_channels, *self.cfg.window)
                for _ in range(expected - yielded):
                    yield filler, self._filler_target()

    def _filler_target(self):
        """What a placeholder carries: nothing a loss counts."""
        if self.cfg.target == "class":
            return -1
        h, w = (16 * v for v in self.cfg.window)
        if self.cfg.target == "segmentation":
            return {"mask": torch.full((h, w), 255, dtype=torch.int64)}
        return {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
                "difficult": torch.zeros(0, dtype=torch.bool), "iscrowd": torch.zeros(0, dtype=torch.bool)}

    #: decoded samples held before they are written to the cache together
    CACHE_WRITE_BATCH = 64

    def decoded(self, slices: list[stages.ShardSlice], codec: Codec, epoch: int = 0):
        """The cached-decode stage: ``(ŷ, target)`` of each slice's samples, from the warm cache
        where it holds them, else entropy-decoded from the tar (and then cached). Corrupt samples
        are skipped (logged), or raised in strict mode. `pipeline.loader.warm` runs this stage
        alone to fill the cache."""
        for sl in slices:
            sha = self._shard_sha[sl.name]
            held = self.cache.positions(sha, sl.start, sl.stop) if self.cache else set()
            done: set[int] = set()
            if len(held) == sl.stop - sl.start:  # warm: the tar is not even opened...
                for c in self.cache.read(sha, sl.start, sl.stop):
                    if c.pos != sl.start + len(done):
                        break
                    done.add(c.pos)
                    yield c.y_hat, c.target
                if len(done) == len(held):
                    continue
                # ...unless a row vanished meanwhile (damaged, or another process evicted it):
                # then the rest of the slice comes from the tar, in the same order
            fresh: list[CachedSample] = []
            for s in stages.slice_samples([sl], self._fault):
                pos = s["__pos__"]
                if pos in done:
                    continue
                if pos in held and (c := self.cache.read_one(sha, pos)) is not None:
                    yield c.y_hat, c.target
                    continue
                try:
                    y_hat, target = self._sample(self._drawn(s, epoch), codec)
                except DatasetError as exc:
                    self._fault(ShardFault(sl.url, str(exc), "this sample"))
                    continue
                if self.cache is not None:
                    fresh.append(CachedSample(pos, s["__key__"], target, y_hat))
                    if len(fresh) >= self.CACHE_WRITE_BATCH:
                        self.cache.put(sha, fresh)
                        fresh = []
                yield y_hat, target
            if self.cache is not None:
                self.cache.put(sha, fresh)

    def _drawn(self, s: dict, epoch: int) -> dict:
        """``s`` with the encoding this epoch draws (`members`) as its latent: one of the scales,
        uniformly, seeded by (seed, epoch, key) alone, so any worker or rank layout draws alike.
        Its sample JSON then gives that encoding's size, which the target's boxes and mask follow."""
        if self.cfg.members is None or not self.cfg.train:
            return s
        key = s["__key__"]
        scale = member_scale(self.cfg.seed, epoch, key, self.cfg.members)
        if scale == 1.0:
            return s
        try:
            meta = json.loads(s["json"])
        except (KeyError, ValueError) as exc:
            raise DatasetError(f"sample {key}: its JSON cannot be read to find its scale members "
                               f"({exc})") from None
        member = next((m for m in meta.get("members", ()) if m["scale"] == scale), None)
        if member is None:  # too small for this scale (or its encoding failed): the image itself
            return s
        if member["member"] not in s:
            raise DatasetError(f"sample {key} lists {key}.{member['member']}, which its tar does not hold")
        out = {**s, "latent": s[member["member"]]}
        if self.cfg.target == "class":
            return out
        meta["enc_hw"] = member["enc_hw"]  # boxes and the mask follow it (`targets.target_of`)
        out["json"] = json.dumps(meta).encode()
        return out

    def _sample(self, s: dict, codec: Codec) -> tuple[torch.Tensor, int | bytes]:
        """ŷ and target of one sample read from a tar; a `DatasetError` naming its key and
        member when either cannot be made (a member missing, damaged, or a link skipped)."""
        key = s["__key__"]
        if "latent" not in s:
            raise DatasetError(f"sample {key} has no {key}.latent member")
        try:
            y_hat = codec.decode_y(s["latent"], max_pixels=self.data.max_pixels)
        except Exception as exc:  # noqa: BLE001 - one corrupt sample must not end the epoch
            raise DatasetError(f"{key}.latent does not decode: {_said(exc)}") from exc
        try:
            return y_hat, self._target(s)
        except Exception as exc:  # noqa: BLE001 - nor one unreadable label or annotation
            raise DatasetError(f"sample {key}: its target cannot be read ({_said(exc)})") from exc

    def _fault(self, fault: ShardFault) -> None:
        """The error policy of every tar this loader reads: strict raises each fault; otherwise
        it is logged and what it spoils is skipped (placeholders keep the counts equal)."""
        if self.cfg.strict:
            raise fault
        log.warning("%s; %s skipped", fault, fault.skips) if fault.skips else log.warning("%s", fault)


def _said(exc: Exception) -> str:
    """An exception as a message: ours speak for themselves, others are named by type."""
    return str(exc) if isinstance(exc, LatentShardsError) else f"{type(exc).__name__}: {exc}"


def resume_point(batches: int, batch_size: int, sizes: list[int],
                 drop_last: bool = False) -> tuple[list[int], int]:
    """Samples each worker had handed over once a DataLoader delivered ``batches`` batches,
    and the worker whose turn came next.

    The DataLoader takes one batch from each worker in turn (worker 0, 1, …), skipping
    workers that have run out; a worker's last batch may be partial, or with ``drop_last``
    is dropped.
    """
    left = [n // batch_size if drop_last else -(-n // batch_size) for n in sizes]  # each worker's batches
    taken = [0] * len(sizes)
    w = 0
    for _ in range(batches):
        if not any(left):
            break
        while not left[w]:
            w = (w + 1) % len(sizes)
        taken[w] += 1
        left[w] -= 1
        w = (w + 1) % len(sizes)
    return [min(n, t * batch_size) for n, t in zip(sizes, taken, strict=True)], w


def consumed_by_worker(batches: int, batch_size: int, sizes: list[int]) -> list[int]:
    return resume_point(batches, batch_size, sizes)[0]
