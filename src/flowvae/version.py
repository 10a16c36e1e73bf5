"""The version of flowvae, defined once: read by the package, the metadata build
(``[tool.setuptools.dynamic]`` in pyproject.toml, without importing torch) and every file flowvae writes."""

__version__ = "0.1.0"
