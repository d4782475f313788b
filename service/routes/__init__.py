"""The HTTP routes, one router per domain; :func:`service.app.create_app` assembles them."""
