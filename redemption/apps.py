from django.apps import AppConfig


class RedemptionConfig(AppConfig):
    name = "redemption"
    verbose_name = "Seats and subscriptions"
