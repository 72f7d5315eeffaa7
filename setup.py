"""Build step for the native rANS coder; everything else is in pyproject.toml.

The extension is optional: where no C compiler is found the install still succeeds and
latent-shards codes with CompressAI's own coder (same bytes, slower), saying so once.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "pipeline.codec._rans",
            sources=["pipeline/codec/native/rans.c", "pipeline/codec/native/module.c"],
            extra_compile_args=["-O2", "-std=c99"],
            optional=True,
        )
    ]
)
