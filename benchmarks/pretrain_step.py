"""One SoCo or AlignDet pretraining step against the sum of its parts, and the mapper's speed
against the step's, measured in the same run.

    python benchmarks/pretrain_step.py [--config CONFIG] [--batch 8] [--steps 5] [--repeats 3]

(default config: projects/SoCo/configs/soco_R18_FPN_4conv1fc_demo.py)

Step: ``model(batch)`` (which first applies the momentum update), backward, optimizer step, as
the trainer runs it.
SoCo: online + predictor and target on the three views, the four BYOL pair losses.
AlignDet: online detector on view 1 (its regression losses), momentum detector on view 2, the
box InfoNCE.
Parts: SoCo: online forward (backbone + FPN + RoIAlign + box head + projector + predictor) and
backward on each view, plus the target's forward on each view, each timed on its own.
AlignDet: the online detector's ``align_forward`` + backward of its losses (and of its
embeddings), plus the momentum detector's ``align_forward``.
Overhead = step / parts - 1 (issue target: at most 15 %). Timings are the median over
``--steps`` steps of the best of ``--repeats`` interleaved rounds (steps and parts alternate, so
machine noise hits both alike).

Data: images per second of the config's SoCoDatasetMapper in this process (one loader worker)
against images per second of the step; the loader keeps up when workers x mapper rate >= step
rate. The batches are mapped before timing, so the step times contain no data loading.

Any pretraining config works; datasets that are not on this machine (ImageNet) are swapped for
the unlabeled demo split with a proposal cache made on the fly (about 10 s).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.data import get_detection_dataset_dicts
from detectron2.utils.events import EventStorage

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(REPO, "projects", "SoCo", "configs", "soco_R18_FPN_4conv1fc_demo.py")


def _proposal_cache(cache_dir: str, filter_name: str) -> str:
    from d2ext.proposals import dataset_items, filter_from_name, generate_proposals

    filt = filter_from_name(filter_name)
    items = dataset_items("d2ext_demo_unlabeled")
    generate_proposals(items, cache_dir, filt=filt, workers=2, progress=False)
    return cache_dir


def _median_of_best(rounds: list[list[float]]) -> float:
    """Per step index the best over rounds, then the median over steps."""
    return statistics.median(min(r[i] for r in rounds) for i in range(len(rounds[0])))


def time_mapper(mapper, dicts: list[dict], n: int) -> tuple[list[dict], float]:
    start = time.perf_counter()
    out = [mapper(dicts[i % len(dicts)]) for i in range(n)]
    return out, n / (time.perf_counter() - start)


def run(config: str, batch: int, steps: int, repeats: int, threads: int | None):
    from d2ext.data import register_all_datasets
    from d2ext.data.datasets import generate_demo_data

    if threads:
        torch.set_num_threads(threads)
    generate_demo_data()
    register_all_datasets()
    cfg = LazyConfig.load(config)
    aligndet = "AlignDet" in str(cfg.model._target_)
    tmp = tempfile.mkdtemp(prefix="d2ext_bench_")
    cfg.dataloader.train.mapper.proposals.cache_dir = _proposal_cache(
        os.path.join(tmp, "props"), "ratio3size0008" if aligndet else "ratio3size0308"
    )
    cfg.dataloader.train.mapper.proposals.key = "image_id"
    mapper = instantiate(cfg.dataloader.train.mapper)
    dicts = get_detection_dataset_dicts("d2ext_demo_unlabeled", filter_empty=False)

    mapped, mapper_rate = time_mapper(mapper, dicts, batch * (steps + 1))
    batches = [mapped[i * batch : (i + 1) * batch] for i in range(steps + 1)]

    torch.manual_seed(0)
    model = instantiate(cfg.model).train()
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)

    def step(data):
        losses = model(data)
        total = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()

    def parts_aligndet(data):
        """Online detector forward + backward on view 1, momentum detector forward on view 2."""
        t = time.perf_counter()
        losses, emb, _ = model.online.align_forward(model._views(data, 0))
        (sum(losses.values()) + emb.square().mean()).backward()
        t_online = time.perf_counter() - t
        t = time.perf_counter()
        with torch.no_grad():
            model.target.align_forward(model._views(data, 1), with_losses=False)
        t_target = time.perf_counter() - t
        optimizer.zero_grad(set_to_none=True)
        return t_online, t_target

    def overhead_aligndet(data):
        """What an AlignDet step runs beyond its parts, each timed on its own: the box InfoNCE
        forward + backward on this batch's embeddings, the EMA update of the momentum detector,
        and the optimizer step (gradient clipping included) on the online detector's gradients.
        """
        from d2ext.projects.aligndet.loss import box_infonce

        losses, queries, query_ids = model.online.align_forward(model._views(data, 0))
        sum(losses.values()).backward()
        t = time.perf_counter()
        optimizer.step()
        t_opt = time.perf_counter() - t
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            _, keys, key_ids = model.target.align_forward(model._views(data, 1), with_losses=False)
        queries = queries.detach().requires_grad_(True)
        t = time.perf_counter()
        box_infonce(queries, query_ids, keys, key_ids, model.temperature).backward()
        t_loss = time.perf_counter() - t
        t = time.perf_counter()
        model.momentum_schedule.step(model.online, model.target)
        t_ema = time.perf_counter() - t
        return {
            "infonce": t_loss,
            "ema": t_ema,
            "optimizer": t_opt,
            "queries": len(queries),
            "keys": len(keys),
        }

    def parts(data):
        """Online forward + backward per view, target forward per view; seconds of each."""
        if aligndet:
            return parts_aligndet(data)
        t_online = t_target = 0.0
        for v in sorted(set(model.box_list_views)):
            images = torch.stack([d["views"][v] for d in data])
            lists = [i for i, view in enumerate(model.box_list_views) if view == v]
            boxes = {i: [d["boxes"][i] for d in data] for i in lists}
            levels = {i: torch.cat([d["levels"][i] for d in data]) for i in lists}
            t = time.perf_counter()
            feats = model._features(model.online, images)
            out = [
                model._embed(model.online, model.predictor, feats, boxes[i], levels[i])
                for i in lists
            ]
            sum(o.square().mean() for o in out).backward()
            t_online += time.perf_counter() - t
            t = time.perf_counter()
            with torch.no_grad():
                feats = model._features(model.target, images)
                for i in lists:
                    model._embed(model.target, None, feats, boxes[i], levels[i])
            t_target += time.perf_counter() - t
        optimizer.zero_grad(set_to_none=True)
        return t_online, t_target

    with EventStorage(0):
        step(batches[-1])  # warm-up
        parts(batches[-1])
        step_rounds, online_rounds, target_rounds = [], [], []
        for _ in range(repeats):
            s, o, g = [], [], []
            for data in batches[:-1]:
                t = time.perf_counter()
                step(data)
                s.append(time.perf_counter() - t)
                t_online, t_target = parts(data)
                o.append(t_online)
                g.append(t_target)
            step_rounds.append(s)
            online_rounds.append(o)
            target_rounds.append(g)

    t_step = _median_of_best(step_rounds)
    t_online = _median_of_best(online_rounds)
    t_target = _median_of_best(target_rounds)
    t_parts = t_online + t_target
    step_rate = batch / t_step
    workers = cfg.dataloader.train.get("num_workers", 0) or 1
    print(
        f"config: {os.path.relpath(config, REPO)}, batch {batch}, threads {torch.get_num_threads()}"
    )
    online_views, target_views = ("view 1", "view 2") if aligndet else ("3 views", "3 views")
    print(f"  online fwd+bwd ({online_views}) {t_online * 1e3:8.1f} ms")
    print(f"  target fwd ({target_views})     {t_target * 1e3:8.1f} ms")
    print(f"  sum of parts             {t_parts * 1e3:8.1f} ms")
    print(f"  {'AlignDet' if aligndet else 'SoCo'} step            {t_step * 1e3:8.1f} ms")
    overhead = t_step / t_parts - 1.0
    print(f"  overhead = step / parts - 1: {overhead * 100:+.1f} % (target <= 15 %)")
    print(f"  mapper: {mapper_rate:.1f} images/s per worker; step: {step_rate:.1f} images/s")
    keeps_up = "keeps up" if workers * mapper_rate >= step_rate else "STARVES the step"
    print(
        f"  loader with the config's {workers} worker(s): {workers * mapper_rate:.1f} images/s, "
        f"{workers * mapper_rate / step_rate:.1f}x the step's need ({keeps_up})"
    )
    result = {"overhead": overhead, "mapper_rate": mapper_rate, "step_rate": step_rate}
    if aligndet:  # where the overhead goes
        with EventStorage(0):
            split = [overhead_aligndet(data) for data in batches[:-1]]
        med = {k: statistics.median(d[k] for d in split) for k in split[0]}
        total = med["infonce"] + med["ema"] + med["optimizer"]
        print(
            f"  overhead's parts (median over {len(split)} batches, each timed on its own): "
            f"InfoNCE fwd+bwd {med['infonce'] * 1e3:.1f} ms ({med['queries']:.0f} queries x "
            f"{med['keys']:.0f} keys), EMA {med['ema'] * 1e3:.1f} ms, optimizer step "
            f"{med['optimizer'] * 1e3:.1f} ms; sum {total * 1e3:.1f} ms "
            f"against step - parts {(t_step - t_parts) * 1e3:.1f} ms"
        )
        result["overhead_parts_s"] = med
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.batch < 2:
        sys.exit("--batch must be at least 2 (BatchNorm in the projector needs it)")
    return run(args.config, args.batch, args.steps, args.repeats, args.threads)


if __name__ == "__main__":
    main()
