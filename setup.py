"""Builds d2ext and its compiled extension d2ext._C.

The CPU kernels are always built. The CUDA kernels are built when ``FORCE_CUDA=1`` or a GPU is
visible; ``TORCH_CUDA_ARCH_LIST`` picks the architectures (e.g. ``9.0``). Build with
``pip install --no-build-isolation -e .`` so the installed torch is used.
"""

import glob
import os

import torch
from setuptools import find_packages, setup
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

CSRC = os.path.join("d2ext", "layers", "csrc")


def _want_cuda() -> bool:
    force = os.environ.get("FORCE_CUDA", "0") == "1"
    return force or (torch.cuda.is_available() and torch.version.cuda is not None)


def get_extensions():
    sources = sorted(glob.glob(os.path.join(CSRC, "**", "*.cpp"), recursive=True))
    # -ffp-contract=off / --fmad=false: no fused multiply-add, so every kernel rounds each
    # operation exactly as the pure-torch references do and the results agree bit for bit.
    # -fopenmp: at::parallel_for is header code that only runs in parallel when the extension
    # itself is compiled with OpenMP (torch's own CPU build uses it).
    extra = {"cxx": ["-O3", "-ffp-contract=off", "-fopenmp"]}
    ext_cls = CppExtension
    if _want_cuda():
        ext_cls = CUDAExtension
        sources += sorted(glob.glob(os.path.join(CSRC, "**", "*.cu"), recursive=True))
        extra["nvcc"] = ["-O3", "--fmad=false", "--expt-relaxed-constexpr"]
    return [
        ext_cls(
            "d2ext._C",
            sources,
            include_dirs=[os.path.abspath(CSRC)],
            extra_compile_args=extra,
            extra_link_args=["-fopenmp"],
        )
    ]


setup(
    name="d2ext",
    version="0.1.0",
    description="Detectron2 extensions: SoCo, AlignDet, ScaleDet, imTED, Co-DETR",
    packages=find_packages(include=["d2ext", "d2ext.*"]),
    python_requires=">=3.10",
    ext_modules=get_extensions(),
    cmdclass={"build_ext": BuildExtension},
    package_data={"d2ext": ["layers/csrc/**/*"]},
    zip_safe=False,
)
