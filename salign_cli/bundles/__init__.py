"""Model bundles: the contract, reading and writing them, the registry, the Hub and its cache.

One job per module, in dependency order (no module imports one listed after it):

- `layout` — the file names of a bundle, and `bundle_folder_in` (a run folder stands for its
  ``bundle/``); imports nothing.
- `contract` — `BundleContract`, the typed ``salign.json``; its limits.
- `registry` — named bundles (``salign_cli/_weights/registry.json``), torch-free.
- `files` — reading a bundle's files safely: `read_contract`, `verify_weights`.
- `card` — the Hub model card generated from the contract.
- `hub_paths` — the Hub's environment settings, read at call time.
- `spec` — what a ``--model``/``--from`` value names (`parse_spec`), `ResolvedBundle`.
- `hub` — fetching from the Hub (with the cache as fallback) and publishing.
- `cache` — the bundles in the Hub cache, and filing a carried-in one there.
- `resolve` — `open_bundle`: the one place a name becomes a bundle folder.
- `store` — `load_bundle`, `save_bundle`, `build_model`, `untrained_bundle` (torch).

Importing this package imports none of them.
"""
