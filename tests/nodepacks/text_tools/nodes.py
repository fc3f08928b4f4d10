"""The text_tools nodes."""

from .casing import shout


class TextShout:
    CATEGORY = "tests/text"
    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": "hello"})}}

    def run(self, text):
        return (shout(text),)


class TextSplitLines:
    """One STRING in, one list item per line out."""

    CATEGORY = "tests/text"
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("lines",)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": "", "multiline": True})}}

    def run(self, text):
        return (text.splitlines(),)


class TextJoinLines:
    """A whole list in (INPUT_IS_LIST), one STRING out."""

    CATEGORY = "tests/text"
    RETURN_TYPES = ("STRING",)
    INPUT_IS_LIST = True
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"lines": ("STRING", {"forceInput": True}), "separator": ("STRING", {"default": " "})}}

    def run(self, lines, separator):
        return (separator[0].join(lines),)


NODE_CLASS_MAPPINGS = {"TextShout": TextShout, "TextSplitLines": TextSplitLines, "TextJoinLines": TextJoinLines}
NODE_DISPLAY_NAME_MAPPINGS = {"TextShout": "Shout text", "TextSplitLines": "Split lines"}
