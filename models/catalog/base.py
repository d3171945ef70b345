"""Base class for the `args` of a catalog entry."""

from pydantic import BaseModel, ConfigDict


class Args(BaseModel):
    """Options of one catalog entry. Unknown keys are errors, every number is bounded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoArgs(Args):
    """An entry without options of its own."""
