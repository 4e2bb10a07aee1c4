from fastapi import APIRouter

from api.models import Health
from offload.settings import get_settings

router = APIRouter(tags=["health"])


# Public (api.security.PUBLIC_PATHS): the empty requirement {} lets anonymous calls through.
@router.get("/health", openapi_extra={"security": [{}]})
async def health() -> Health:
    return Health(stage=get_settings().stage)
