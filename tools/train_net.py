#!/usr/bin/env python
"""The single train / evaluate entry point of d2ext.

    python tools/train_net.py --config-file CONFIG.py [--resume] [--eval-only] \\
        [--num-gpus N] [--num-machines M --machine-rank R --dist-url URL] [key=value ...]

Without a GPU, ``--num-gpus N`` starts N CPU processes that train together over gloo.

An ``output_dir`` holding checkpoints needs ``--resume`` or ``train.overwrite=True``. Checkpoints
are loaded without running code from them (``train.unsafe_load=True`` for a trusted file that
holds other objects); a load filling under ``train.min_init_fraction`` of the parameters stops
unless ``train.allow_partial_init=True``. Overrides must name existing keys, with values of the
existing type; ``None``/``null`` set None.
"""

from d2ext.utils.arguments import argument_parser

if __name__ == "__main__":
    # parsed before torch and detectron2 load: --help and argument errors are instant
    args = argument_parser(description=__doc__).parse_args()

    from detectron2.engine import launch

    from d2ext.engine.train_loop import main

    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
