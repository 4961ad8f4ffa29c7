"""The bundled prompt sets as data files (`prompt_set=ads` points at ads.yaml); see runner/prompts.py."""
