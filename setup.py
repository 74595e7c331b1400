"""Package list only: the repository folders plugins/, train/ and models/ install under the
unique names soundsight_plugins, soundsight_train and soundsight_models (see pyproject.toml)."""
from setuptools import find_packages, setup


def mapped(name: str, folder: str) -> list[str]:
    return [name] + [f"{name}.{sub}" for sub in find_packages(folder)]


setup(
    packages=find_packages(include=["soundsight", "soundsight.*"])
    + mapped("soundsight_plugins", "plugins")
    + mapped("soundsight_train", "train")
    + ["soundsight_models"],
)
