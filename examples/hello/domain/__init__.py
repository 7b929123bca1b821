"""The user's own `domain` package (not Ordo's)."""


def greeting(name: str) -> str:
    return f"Hello, {name}!"
