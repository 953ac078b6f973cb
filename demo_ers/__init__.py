"""A demo e-Referral Service (eRS): a relying service that signs people in through careid with
OpenID Connect, the way a real NHS service integrates with CIS2 Authentication.

A separate tiny Django project (its own settings, no database), built on Authlib: private_key_jwt,
PKCE, state and nonce, ID tokens verified against careid's JWKS, RP-initiated and back-channel
logout. `python -m demo_ers` serves it; `make run` starts it beside careid.
"""
