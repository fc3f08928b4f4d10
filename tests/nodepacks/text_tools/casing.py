"""Helpers of the text_tools pack, imported relatively by its nodes."""


def shout(text: str) -> str:
    return text.upper() + "!"
