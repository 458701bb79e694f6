"""What the user wants: the spec language (YAML, its JSON Schema, filters, ``--where``).

``from nv_datalad.spec import load_spec`` gives a validated, frozen :class:`Spec`.
"""

from nv_datalad.spec.model import NeurosynthSpec, ResampleSpec, Spec, spec_to_yaml
from nv_datalad.spec.schema_doc import schema
from nv_datalad.spec.validate import load_spec, parse_spec

__all__ = [
    "NeurosynthSpec",
    "ResampleSpec",
    "Spec",
    "load_spec",
    "parse_spec",
    "schema",
    "spec_to_yaml",
]
