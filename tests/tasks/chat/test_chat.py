"""The chat task on the three tiny model types: the label mask is exactly the assistant spans (template
rendering per type), generation batches are left-padded so a batch generates what each prompt does alone, the
answer metrics, and bad conversations named by file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import ROOT
from trainers.data_policy import BadSamples, DataError
from trainers.models.registry import get_family
from trainers.tasks.chat.config import ChatData
from trainers.tasks.chat.conversations import parse, read_conversations
from trainers.tasks.chat.data import PROMPT, ChatCollator, ChatDataset
from trainers.tasks.chat.encode import encode_prompt, encode_training
from trainers.tasks.chat.metrics import answer_scores, most_frequent_answer

IMAGES = ROOT / "data" / "chat_shapes" / "images"
TYPES = ("qwen2-vl", "qwen2.5-vl", "smolvlm", "paligemma")
# What the labels hold for the answer "three": the answer and the end-of-turn the template puts after it.
ANSWER_SPAN = {
    "qwen2-vl": "three<|im_end|>\n",
    "qwen2.5-vl": "three<|im_end|>\n",
    "smolvlm": " three<end_of_utterance>\n",
    "paligemma": "three<eos>",
}


@pytest.fixture(scope="module", params=TYPES)
def tiny(request):
    model, processor = get_family(request.param).build_tiny()(None, seed=0)
    return request.param, model.eval(), processor


def conversation(turns: list[tuple[str, str]], images: int = 1):
    record = {
        "images": [f"train_{i:04d}.png" for i in range(images)],
        "messages": [{"role": r, "content": c} for r, c in turns],
    }
    return parse("test.jsonl:1", record, IMAGES, BadSamples("test"))


def open_images(conv):
    from PIL import Image

    return [Image.open(p).convert("RGB") for p in conv.images]


def label_text(processor, encoded) -> list[str]:
    """The decoded runs of labelled tokens, one string per contiguous span."""
    ids, labels = encoded["input_ids"][0], encoded["labels"][0]
    spans, current = [], []
    for token, label in zip(ids.tolist(), labels.tolist(), strict=True):
        if label != -100:
            assert label == token
            current.append(token)
        elif current:
            spans.append(current)
            current = []
    if current:
        spans.append(current)
    return [processor.tokenizer.decode(s) for s in spans]


def test_label_mask_is_the_assistant_span(tiny):
    name, _, processor = tiny
    conv = conversation([("user", "<image>How many circles?"), ("assistant", "three")])
    encoded = encode_training(processor, conv, open_images(conv))
    assert label_text(processor, encoded) == [ANSWER_SPAN[name]]


def test_the_tiny_processor_saved_and_loaded_back_encodes_alike(tiny, tmp_path):
    """What a run saves is what predict, a ZeRO-3 reload and a resumed run load: it must tokenize as the
    processor that trained (PaliGemma's twin once lost every space to <unk> on reload)."""
    from safetensors.torch import save_model

    from trainers.models.hub import LoadOptions

    name, model, processor = tiny
    model.config.save_pretrained(tmp_path)
    save_model(model, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    processor.save_pretrained(tmp_path)
    _, loaded = get_family(name).load()(str(tmp_path), LoadOptions())
    conv = conversation([("user", "<image>What colour is the square?"), ("assistant", "green")])
    want = encode_training(processor, conv, open_images(conv))
    got = encode_training(loaded, conv, open_images(conv))
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want), name


@pytest.mark.parametrize("kind", ["qwen2-vl", "smolvlm"])
def test_every_assistant_turn_of_a_multi_image_conversation_is_labelled_and_nothing_else(kind):
    _, processor = get_family(kind).build_tiny()(None, seed=0)
    conv = conversation(
        [
            ("system", "Answer with one word."),
            ("user", "<image>How many circles?"),
            ("assistant", "three"),
            ("user", "And here? <image>"),
            ("assistant", "two"),
        ],
        images=2,
    )
    encoded = encode_training(processor, conv, open_images(conv))
    spans = label_text(processor, encoded)
    assert spans == [ANSWER_SPAN[kind], ANSWER_SPAN[kind].replace("three", "two")]
    image_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    ids = encoded["input_ids"][0]
    assert (encoded["labels"][0][ids == image_id] == -100).all()


def test_batched_generation_is_left_padded_and_matches_one_by_one(tiny):
    """Prompts of different lengths in one batch generate what each generates alone."""
    name, model, processor = tiny
    convs = [
        conversation([("user", "<image>How many circles?"), ("assistant", "x")]),
        conversation(
            [("user", "<image>What colour is the square? Answer with one word."), ("assistant", "x")]
        ),
    ]
    items = [encode_prompt(processor, c, open_images(c)) for c in convs]
    batch = ChatCollator(processor.tokenizer.pad_token_id, generation=True)([{PROMPT: i} for i in items])
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][:, -1].all()  # left padding
    kwargs = {"max_new_tokens": 5, "do_sample": False, "pad_token_id": processor.tokenizer.pad_token_id}
    with torch.no_grad():
        together = model.generate(**batch, **kwargs)[:, batch["input_ids"].shape[1] :]
        for row, item in zip(together, items, strict=True):
            alone = model.generate(**item, **kwargs)[0, item["input_ids"].shape[1] :]
            assert row[: len(alone)].tolist() == alone.tolist(), name


def test_a_generation_prompt_carries_no_labels_so_the_trainers_eval_pass_has_no_nan_loss(tiny):
    """PaliGemma's processor labels a prompt without a suffix all -100: its mean loss over no tokens was 0/0,
    the NaN eval loss it reported in fp32 and bf16 alike (the Trainer's loss pass batches the validation
    prompts with the training collator, labels kept)."""
    name, model, processor = tiny
    conv = conversation([("user", "<image>How many circles?"), ("assistant", "three")])
    item = encode_prompt(processor, conv, open_images(conv))
    assert "labels" not in item, name
    batch = ChatCollator(processor.tokenizer.pad_token_id)([item])
    assert "labels" not in batch
    with torch.no_grad():
        assert torch.isfinite(model(**batch).logits).all()


def test_training_batch_pads_right_with_ignored_labels(tiny):
    name, model, processor = tiny
    convs = [
        conversation([("user", "<image>How many circles?"), ("assistant", "three")]),
        conversation([("user", "<image>What colour is the square? Tell me."), ("assistant", "red")]),
    ]
    items = [encode_training(processor, c, open_images(c)) for c in convs]
    batch = ChatCollator(processor.tokenizer.pad_token_id)(items)
    assert batch["attention_mask"][:, 0].all()
    assert ((batch["attention_mask"] == 0) <= (batch["labels"] == -100)).all()
    loss = model(**batch).loss
    assert torch.isfinite(loss)


def test_an_evaluation_batch_gives_the_assistant_token_loss_and_the_prompt_to_generate_from(tiny, tmp_path):
    """The validation set feeds two collators: the Trainer's (the eval loss: labels on the assistant spans alone,
    as in training) and the generation one (the prompt before the last answer, left-padded)."""
    name, model, processor = tiny
    second = {**GOOD, "images": ["train_0001.png"]}
    second["messages"] = [{"role": "user", "content": "<image>What colour is it?"}, GOOD["messages"][1]]
    path = write(tmp_path, [GOOD, second])
    data = ChatData(train=str(path), val=str(path), images=str(IMAGES))
    val = ChatDataset(path, "data.val", processor, data, IMAGES, evaluation=True)
    items = [val[0], val[1]]
    pad = processor.tokenizer.pad_token_id
    loss_batch = ChatCollator(pad)(items)
    trained = ChatCollator(pad)([encode_training(processor, c, open_images(c)) for c in val.samples])
    assert loss_batch.keys() == trained.keys() and PROMPT not in loss_batch
    assert all(torch.equal(loss_batch[k], trained[k]) for k in trained)
    labelled = [label_text(processor, {k: v[i : i + 1] for k, v in loss_batch.items()}) for i in range(2)]
    assert labelled == [[ANSWER_SPAN[name].replace("three", "four")]] * 2
    with torch.no_grad():
        assert torch.isfinite(model(**loss_batch).loss)
    prompts = [encode_prompt(processor, c, open_images(c)) for c in val.samples]
    generation = ChatCollator(pad, generation=True)(items)
    want = ChatCollator(pad, generation=True)([{PROMPT: p} for p in prompts])
    assert "labels" not in generation and generation.keys() == want.keys()
    assert all(torch.equal(generation[k], want[k]) for k in want)
    assert generation["attention_mask"][:, -1].all()  # left-padded: every prompt ends at the last column


def test_metrics_and_baseline():
    scores = answer_scores(
        ("exact_match", "answer_f1"), ["The red.", "two circles"], ["red", "three circles"]
    )
    assert scores == {"exact_match": 0.5, "answer_f1": pytest.approx((1 + 0.5) / 2)}
    base = most_frequent_answer(["red", "red", "two"], ["red", "blue"], ("exact_match",))
    assert base.answer == "red" and base.scores == {"exact_match": 0.5}


def write(tmp_path: Path, lines: list[dict]) -> Path:
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


GOOD = {
    "images": ["train_0000.png"],
    "messages": [{"role": "user", "content": "<image>How many?"}, {"role": "assistant", "content": "four"}],
}


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        (
            {"images": ["train_0000.png"], "messages": [{"role": "user", "content": "<image>How many?"}]},
            "no assistant turn",
        ),
        ({**GOOD, "images": ["train_0000.png", "train_0001.png"]}, "1 image placeholder(s)"),
        (
            {**GOOD, "messages": [{"role": "human", "content": "<image>x"}, GOOD["messages"][1]]},
            "role 'human'",
        ),
        ({**GOOD, "images": ["ghost.png"]}, "ghost.png not found"),
    ],
)
def test_bad_conversations_name_file_and_line(tmp_path, line, fragment):
    path = write(tmp_path, [GOOD, line])
    with pytest.raises(DataError) as error:
        read_conversations(path, IMAGES, BadSamples(str(path)))
    assert f"{path}:2" in str(error.value) and fragment in str(error.value)
    skip = BadSamples(str(path), "skip")
    assert len(read_conversations(path, IMAGES, skip)) == 1 and skip.skipped == 1


def test_a_conversation_longer_than_max_length_is_refused_with_its_line(tmp_path):
    _, processor = get_family("qwen2-vl").build_tiny()(None, seed=0)
    long = {
        **GOOD,
        "messages": [{"role": "user", "content": "<image>" + "How many? " * 100}, GOOD["messages"][1]],
    }
    path = write(tmp_path, [GOOD, long])
    data = ChatData(train=str(path), val=str(path), images=str(IMAGES), max_length=128)
    with pytest.raises(DataError, match=rf"{path}:2: the conversation is \d+ tokens"):
        ChatDataset(path, "data.train", processor, data, IMAGES)
    data.on_bad_sample = "skip"
    assert len(ChatDataset(path, "data.train", processor, data, IMAGES)) == 1


def test_paligemma_refuses_multi_turn_conversations(tmp_path):
    _, processor = get_family("paligemma").build_tiny()(None, seed=0)
    two = {
        **GOOD,
        "messages": [
            *GOOD["messages"],
            {"role": "user", "content": "Sure?"},
            {"role": "assistant", "content": "yes"},
        ],
    }
    path = write(tmp_path, [GOOD, two])
    data = ChatData(train=str(path), val=str(path), images=str(IMAGES))
    with pytest.raises(DataError, match="no chat template"):
        ChatDataset(path, "data.train", processor, data, IMAGES)
