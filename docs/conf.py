"""Sphinx configuration of the documentation site: ``make docs`` builds it into docs/_build/html."""

project = "locked_targets"

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx_click"]

# The pages are Markdown; links between them name headings by their GitHub anchors
# (design.md#fencing-tokens), which MyST makes for headings down to ###.
source_suffix = {".md": "markdown"}
myst_heading_anchors = 3
exclude_patterns = ["_build"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"

# make docs runs nitpicky (-n), so every name in a signature must resolve. No intersphinx:
# fetching python's, luigi's or gokart's inventory would make make test need the network.
# Each name below is one the build cannot link without it.
nitpick_ignore = [
    # The standard library's, in the type hints of make_model_target and RunWithLock.
    ("py:class", "collections.abc.Callable"),
    # gokart's, in the signatures of the factories and of LockedTarget.dump.
    ("py:class", "TargetOnKart"),
    ("py:class", "gokart.file_processor.base.FileProcessor"),
    ("py:class", "FlattenableItems"),
    ("py:class", "RequiredTaskOutput"),
    # luigi's, named by the docstring LockedTarget.exists inherits from luigi.target.Target,
    # and by the signatures of TaskOnKart.deps and TaskOnKart.get_params.
    ("py:class", "Target"),
    ("py:class", "luigi.task.Task"),
    ("py:class", "luigi.parameter.Parameter"),
    # RunWithLock's private TypeVar: it returns what it decorates, with the same type.
    ("py:class", "locked_targets.run_lock._Decorated"),
]

html_theme = "alabaster"
html_title = project
