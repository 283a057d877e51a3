"""Conda files become pip requirements; conda-only packages and Python mismatches are errors."""

from __future__ import annotations

import pytest

from components._conda import CondaError, requirements_from_conda

pytestmark = pytest.mark.components

CONDA = """
name: sklearn-env
channels: [conda-forge]
dependencies:
  - python=3.11
  - pip=23.3
  - conda-forge::scikit-learn=1.9.1
  - numpy>=2.0
  - pandas=3.1.1=py311h_0
  - pytorch
  - pip:
    - joblib==1.6.0
    - inference-schema
"""


def test_conda_packages_become_pip_requirements() -> None:
    assert requirements_from_conda(CONDA, "conda.yaml", "sk-env", "3.11") == [
        "scikit-learn==1.9.1",
        "numpy>=2.0",
        "pandas==3.1.1",
        "torch",
        "joblib==1.6.0",
        "inference-schema",
    ]


def test_conda_only_package_names_package_and_file() -> None:
    text = "dependencies:\n  - python=3.11\n  - cudatoolkit=11.8\n  - scikit-learn\n"
    with pytest.raises(CondaError) as info:
        requirements_from_conda(text, "conda.yaml", "sk-env", "3.11")
    assert str(info.value) == (
        "environment 'sk-env': 'cudatoolkit' in conda.yaml is conda-only; drop it or pick a "
        "base_image with it"
    )


def test_python_pin_must_match() -> None:
    with pytest.raises(CondaError) as info:
        requirements_from_conda("dependencies: [python=3.8]", "conda.yaml", "sk-env", "3.11")
    assert str(info.value) == (
        "environment 'sk-env': conda.yaml pins python=3.8 but the environment's python is "
        "3.11; change one of them"
    )
    assert (
        requirements_from_conda("dependencies: [python=3.11.4, python>=3.8]", "c.yaml", "e", "3.11")
        == []
    )


def test_unreadable_files() -> None:
    with pytest.raises(CondaError, match=r"^environment 'e': c.yaml is not valid YAML"):
        requirements_from_conda("dependencies: [a", "c.yaml", "e", "3.11")
    with pytest.raises(CondaError, match=r"^environment 'e': c.yaml needs a 'dependencies:' list"):
        requirements_from_conda("dependencies: 3", "c.yaml", "e", "3.11")
