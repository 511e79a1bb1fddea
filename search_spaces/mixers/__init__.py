"""Built-in token mixers. Importing this package registers them (see ``search_spaces.registry``)."""

from search_spaces.mixers import gfnet, hyena, softmax  # noqa: F401
