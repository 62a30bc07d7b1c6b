"""Speech synthesis for callers: ``say:`` lines, engines (Piper, espeak-ng, Azure AI Speech), the
speech cache and caller variants. Nothing here runs during load: prepare_speech() runs before it.
"""
