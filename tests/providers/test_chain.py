"""ClaudeLLM → DeepgramTTS in one chain, both on their fakes: the [END_CALL] path end to end."""

from __future__ import annotations

from nixflex_engine.frames import (
    EndCallFrame,
    LLMContextFrame,
    MarkFrame,
    OutputAudioFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from nixflex_engine.pipeline import Pipeline
from nixflex_engine.processors.llm import ClaudeLLM
from nixflex_engine.processors.tts import DeepgramTTS
from nixflex_engine.sandbox import speech

from .conftest import ANTHROPIC_KEY, DG_KEY, Harness, Sandbox


async def test_end_call_split_across_tokens_ends_the_call_after_the_audio(
    sandbox: Sandbox,
) -> None:
    # The fake streams <= 5-character tokens, so the tag arrives as "[END_" + "CALL]".
    sandbox.anthropic.script.append("Thanks for your time, goodbye! [END_CALL]")
    llm = ClaudeLLM(api_key=ANTHROPIC_KEY, base_url=sandbox.url)
    tts = DeepgramTTS(api_key=DG_KEY, base_url=sandbox.url)
    async with Harness(Pipeline([llm, tts])) as h:
        await h.send(
            LLMContextFrame(messages=({"role": "user", "content": "Bye now."},), system="Be brief.")
        )
        await h.wait_for(lambda: h.task.done)  # EndCallFrame reached the end: the run ended
        kinds = h.kinds()
        assert kinds[-3:] == ["MarkFrame", "TTSStoppedFrame", "EndCallFrame"]
        assert h.down(EndCallFrame)[0].reason == "agent_hangup"
        spoken = [f.text for f in h.down(TTSTextFrame)]
        assert " ".join(spoken) == "Thanks for your time, goodbye!"
        heard = [
            speech.decode_text(
                b"".join(a.audio for a in h.down(OutputAudioFrame) if a.chunk_id == t.chunk_id)
            )
            for t in h.down(TTSTextFrame)
        ]
        assert heard == spoken
        assert len(h.down(MarkFrame)) == len(spoken) and len(h.down(TTSStoppedFrame)) == 1
    assert h.task.result is not None and h.task.result.reason == "agent_hangup"
    assert "".join(sandbox.deepgram.speak_log[0].texts).find("[") == -1
