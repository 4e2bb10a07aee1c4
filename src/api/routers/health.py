from fastapi import APIRouter

from api.models import Health
from offload.fastapi import OffloadDep

router = APIRouter(tags=["health"])


# Public (api.security.PUBLIC_PATHS): the empty requirement {} lets anonymous calls through.
@router.get("/health", openapi_extra={"security": [{}]})
async def health(offload: OffloadDep) -> Health:
    return Health(stage=offload.settings.stage)
