"""overmount planner: plan and prove move-aside restores of objects hidden under overmounts."""

__version__ = "0.1.0"
