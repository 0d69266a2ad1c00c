"""inspect_ai entry point: registers the model provider `warmfast` (`--model warmfast/<arm>`).

inspect loads every package's `inspect_ai` entry point whenever a name is missing from its
registry, whatever model is asked for; so this module stays light (inspect_ai only) and the
provider (inspect_api.py: the engine, torch) is imported when a `warmfast/...` model is built.
"""
from inspect_ai.model import modelapi


@modelapi(name="warmfast")
def warmfast():
    from warmfast.integrations.inspect_api import WarmfastAPI

    return WarmfastAPI
