"""What the chat tasks (Arena-Hard, UltraFeedback, ShareGPT) share: a ``ChatTask`` base with their
prompt templates, which are this project's design.

The 0-revision prompt is the user's request itself, sent as one user turn through the model's chat
template. The N-revision prompt mirrors the summary tasks' EXAMPLE SUMMARY: the request and the
previous answer as an EXAMPLE RESPONSE, with an instruction to answer better. It names the same
criteria the chat judge uses (helpful, correct, complete), asks for the answer alone so the
revision can be judged as an answer, and keeps the request first so the budget cut of a long
request never reaches the example response.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.task import TextTask

CHAT_TEMPLATE = "${prompt}"

CHAT_INSTRUCTION = "Respond to the user's request helpfully and correctly."

CHAT_REVISION_TEMPLATE = """Below is a user's REQUEST and an EXAMPLE RESPONSE to it. Write a response to the REQUEST that is more helpful, correct and complete than the EXAMPLE RESPONSE. Reply with the response only.

REQUEST:
${prompt}

EXAMPLE RESPONSE:
${previous}"""


@dataclass
class ChatTask(TextTask):
    """Base of the chat tasks (not registered itself): the request as one user turn under the
    model's chat template, these templates, and the chat judge prompt."""

    family = "chat"
    instruction = CHAT_INSTRUCTION
    chat = True
    source_field = "prompt"
    template = CHAT_TEMPLATE
    revision_template = CHAT_REVISION_TEMPLATE
