"""The benchmark workload: 32 chats with prompts of about 17 to 281 tokens, 64 new tokens each.

Shared by every contender so they all answer the same requests. No Django, no torch.
"""

import random

TOPICS = [
    "the history of the printing press",
    "how tides work",
    "writing a good unit test",
    "why the sky is blue",
    "the rules of chess",
    "making bread at home",
    "how vaccines work",
    "the life of bees",
    "sorting algorithms",
    "the water cycle",
    "learning a new language",
    "how compilers work",
    "the French revolution",
    "black holes",
    "growing tomatoes",
    "the stock market",
    "how bicycles stay upright",
    "volcanoes",
    "the Roman empire",
    "public key cryptography",
    "jazz music",
    "how airplanes fly",
    "climate and weather",
    "the human heart",
    "database indexes",
    "photosynthesis",
    "the Silk Road",
    "electric motors",
    "coral reefs",
    "the Unix philosophy",
    "probability",
    "glaciers",
]
FILLER = (
    "Please explain it simply, with an example, and mention one common mistake people make. "
    "I am a curious beginner and I like short paragraphs, concrete numbers and plain words. "
)

NEW_TOKENS = 64


def chats(count: int = 32, seed: int = 0) -> list[list[dict[str, str]]]:
    """``count`` single-turn chats whose prompts grow from short to long (about 17-281 tokens
    with the demo tokenizer)."""
    rng = random.Random(seed)
    result = []
    for index in range(count):
        repeats = round(index * 7 / max(1, count - 1))
        text = f"Tell me about {TOPICS[index % len(TOPICS)]}. " + FILLER * repeats
        if rng.random() < 0.5:
            text = text.strip() + " Thanks!"
        result.append([{"role": "user", "content": text.strip()}])
    return result
