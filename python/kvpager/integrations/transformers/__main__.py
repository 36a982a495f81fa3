"""``python -m kvpager.integrations.transformers``: prints the fingerprints of the installed
transformers' internals, in the form of internals._FINGERPRINTS (to paste there after checking
a new version)."""

from . import current_fingerprints

for name, value in current_fingerprints().items():
    print(f'    "{name}": "{value}",')
