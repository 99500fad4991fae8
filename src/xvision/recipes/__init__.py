"""Named, documented recipes: `xvision fit manifest.csv -o RUN --recipe NAME` runs one end to end.

Each recipe is a backbone (with its preprocessing) and a head configuration; `fit` extracts features into
``RUN/features``, trains the head into ``RUN`` (a run folder like any other) and, when the manifest has a
test split, evaluates on it. The evidence behind the choices is in docs/recipes.md, measured with
benchmarks/recipes_cv.py.
"""

from xvision.recipes.fit import FitResult, fit
from xvision.recipes.registry import DEFAULT_RECIPE, Recipe, get_recipe, list_recipes

__all__ = ["DEFAULT_RECIPE", "FitResult", "Recipe", "fit", "get_recipe", "list_recipes"]
