"""Login throttling (django-axes): failed admin logins counted per username and address."""

from datetime import timedelta

from config.env import env_int

# A username and address pair is refused (429) after LOGIN_FAILURE_LIMIT failed logins, until
# LOGIN_COOLOFF_MINUTES pass without another try (a try while locked out starts them again).
# A correct password before the limit clears the count. Per pair: a stranger guessing from
# elsewhere cannot lock a user out.
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# Behind the TLS proxy, the address that proxy saw (config.proxy), not the proxy's own.
AXES_CLIENT_IP_CALLABLE = "config.proxy.client_ip"
AXES_USERNAME_CALLABLE = "config.login_throttle.attempted_username"
# In the database, so every web process counts the same failures.
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
# Usernames and addresses stay out of the logs and the admin, and no row is kept per
# successful login. `manage.py axes_reset_username NAME` lifts a lockout early.
AXES_VERBOSE = False
AXES_SENSITIVE_PARAMETERS = ["username", "ip_address"]
AXES_ENABLE_ADMIN = False
AXES_DISABLE_ACCESS_LOG = True
