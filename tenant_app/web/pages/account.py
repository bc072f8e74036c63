"""我的帳號: a user changes their own password (the demo county starts everyone on one shared password).

The current password is required, the new one follows the administrator's length rule
(user_admin.set_password), and every other session of the user ends; this one is replaced by a
fresh session so the user stays logged in here.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Response, status

from tenant_app.models import User
from tenant_app.security import passwords, session_store
from tenant_app.security.user_admin import AdminRefusal, set_password
from tenant_app.web.context import Page, WebRoute, client_of, form_page, login_limiter, user_page

router = APIRouter(route_class=WebRoute, include_in_schema=False)


@router.get("/account")
def account(current: Page = Depends(user_page)) -> Response:
    return current.render("account.html", form_error=None)


@router.post("/account/password")
def change_password(current_password: str = Form(""), new_password: str = Form(""),
                    confirm_password: str = Form(""), current: Page = Depends(form_page)) -> Response:
    me = current.user
    # Guessing the current password from a borrowed session counts against the log-in throttle.
    limiter, client = login_limiter(current.request), client_of(current.request)
    throttle = limiter.begin(me.username, client)  # counted as it starts, as a log-in is
    if not throttle.allowed:
        minutes = -(-throttle.retry_after_s // 60)
        return current.render("account.html", status_code=status.HTTP_429_TOO_MANY_REQUESTS,
                              form_error=f"失敗次數過多，請於 {minutes} 分鐘後再試。")
    user = current.db.get_one(User, me.user_id)
    if not passwords.verify_password(current_password, user.password_hash):
        return current.render("account.html", status_code=status.HTTP_403_FORBIDDEN,
                              form_error="目前密碼錯誤。")
    limiter.succeeded(me.username, client)
    if new_password != confirm_password:
        return current.render("account.html", status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
                              form_error="兩次輸入的新密碼不一致。")
    try:
        set_password(current.db, me.user_id, new_password, actor=me.username)
    except AdminRefusal as error:
        current.db.rollback()
        return current.render("account.html", status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
                              form_error=error.message)
    raw_id, row = session_store.create(current.db, me.user_id)  # set_password ended every session
    row.agency_id = current.agency.id if current.agency else None
    current.db.commit()
    current.cookie.session_id = raw_id
    return current.redirect("/account", "密碼已變更，其他裝置上的登入已全部登出。")
