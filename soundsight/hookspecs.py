"""The contract between the core and plugins.

A plugin is a module (or object) registered under the ``soundsight`` entry-point group that
implements some of these hooks with ``@hookimpl``. Plugin modules are imported for every
command, including ``--help``: keep their top level free of heavy imports (torch, moviepy)
and import those inside the command body.
"""

import pluggy

hookspec = pluggy.HookspecMarker("soundsight")
hookimpl = pluggy.HookimplMarker("soundsight")


@hookspec
def register_commands(app):
    """Add Typer commands to ``app`` (a ``typer.Typer``)."""


@hookspec
def register_models(register):
    """Declare the registry models this plugin uses: ``register(ModelSpec(...))``.

    To contribute a folder of model folders to the search path, call
    ``soundsight.registry.add_search_dir(path)`` here.
    """


@hookspec
def register_recipe_steps(register):
    """Declare recipe steps: ``register(RecipeStep(name=..., run=..., params={...}))``."""


@hookspec
def register_demo(register):
    """Add a part to ``soundsight demo``: ``register(name, fn)`` where ``fn(workdir: Path) -> list[Path]``
    makes its own inputs under ``workdir``, runs on the bundled default models and returns the
    outputs it wrote."""
