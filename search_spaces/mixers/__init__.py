"""Built-in token mixers. Importing a module registers its mixers (``search_spaces.registry``);
add a mixer by adding a module here and importing it below."""

from search_spaces.mixers import (  # noqa: F401  (registration)
    binary,
    conv,
    diff,
    fnet,
    gfnet,
    glu,
    gqa,
    hilo,
    hyena,
    hyena2d,
    linear,
    local,
    moh,
    routing,
    single_head,
    softmax,
    sqa,
    strip,
    subsampled,
)
