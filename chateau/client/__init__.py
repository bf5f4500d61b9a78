"""``chateau-client``: a terminal chat client and a scriptable JSON sender.

The wire code (:mod:`.wire`), the chat logic (:mod:`.session`) and the
terminal (:mod:`.terminal`) are separate so each can be tested alone.
"""
