"""Chat with an agent from a web page: the built-in playground, or your own page with the AI SDK.

    turnkit serve examples/web_chat.py --ui        # then open http://127.0.0.1:8000/ui/

This serves the payment agent of `payments.py`: in the playground, ask it to pay someone and the
page shows Approve and Deny buttons, then the wallet (custom state) change. For a page of your own,
the Vercel AI SDK's `useChat` talks to the same server (React shown; Vue, Svelte and Angular have
the same transport):

    import { useChat } from "@ai-sdk/react";
    import { DefaultChatTransport } from "ai";

    const { messages, sendMessage, addToolApprovalResponse } = useChat({
      transport: new DefaultChatTransport({ api: "/agents/payments/uiMessageStream" }),
    });

The chat's `id` becomes the session id; an interrupt arrives as a `tool-approval-request` part,
answered with `addToolApprovalResponse({id, approved})`. The model is `$TURNKIT_MODEL` or the local
SmolLM2; `TURNKIT_MODEL=echoModel` answers with your own words.
"""

from __future__ import annotations

from payments import ai  # examples/ is on the import path when turnkit loads this file

from turnkit.http import create_app

app = create_app(ai)
