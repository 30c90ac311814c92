"""Transports: the Twilio media-stream websocket, as an input and an output processor.

::

    from nixflex_engine.transports import TwilioMediaTransport, twilio_media_route

    async def on_stream(transport: TwilioMediaTransport, start: StartEvent) -> None:
        chain = Pipeline([transport.input(), ..., transport.output()])
        await PipelineTask(chain, call_id=start.call_sid).run()

    app = Starlette(routes=[twilio_media_route("/media", on_stream)])

:func:`twilio_media_route` accepts Twilio's websocket, reads ``connected``/``start``, asks an
optional authorizer (:func:`signature_authorizer` checks ``X-Twilio-Signature``), then calls
``on_stream`` with a :class:`TwilioMediaTransport`: its :meth:`~TwilioMediaTransport.input`
emits ``InputAudioFrame``/``DTMFFrame``/``TransportStartedFrame``; its
:meth:`~TwilioMediaTransport.output` plays ``OutputAudioFrame`` at line pace, sends marks,
answers ``InterruptionFrame`` with ``clear`` and reports what was heard. The protocol core
(:mod:`nixflex_engine.transports.twilio_protocol`) is sans-I/O.
"""

from __future__ import annotations

from nixflex_engine.transports.twilio_media import (
    Authorizer,
    MediaSocket,
    OnStream,
    StreamAuthRequest,
    TwilioInput,
    TwilioMediaTransport,
    TwilioOutput,
    serve_twilio_stream,
    signature_authorizer,
    twilio_media_route,
)
from nixflex_engine.transports.twilio_protocol import StartEvent

__all__ = [
    "Authorizer",
    "MediaSocket",
    "OnStream",
    "StartEvent",
    "StreamAuthRequest",
    "TwilioInput",
    "TwilioMediaTransport",
    "TwilioOutput",
    "serve_twilio_stream",
    "signature_authorizer",
    "twilio_media_route",
]
