"""Package discovery (everything else is in pyproject.toml).

Every package under engine/ and lightlm_tui/ is found, so a new subpackage cannot be left out
of the wheel; `lightlm_presets` is the repo's presets/ folder shipped as data (package-dir in
pyproject.toml), which discovery cannot see under that name, so it is added by hand.
"""

from setuptools import find_packages, setup

setup(packages=find_packages(include=["engine", "engine.*", "lightlm_tui", "lightlm_tui.*"]) + ["lightlm_presets"])
