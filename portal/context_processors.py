from portal.models import Role


def portal(request):
    user = getattr(request, "user", None)
    return {"role": getattr(user, "role", None), "Role": Role}
