"""The console's words: English is the key, zh-TW (Taiwan's usage) the default language."""

from __future__ import annotations

from enum import StrEnum


class Lang(StrEnum):
    ZH_TW = "zh-TW"
    EN = "en"


DEFAULT = Lang.ZH_TW

ZH_TW: dict[str, str] = {
    "CountyCloud console": "CountyCloud 管理主控台",
    "Sign in": "登入", "Sign out": "登出", "User name": "使用者名稱", "Password": "密碼",
    "Wrong user name or password.": "使用者名稱或密碼錯誤。",
    "Too many failed sign-ins; try again later.": "登入失敗次數過多，請稍後再試。",
    "The form expired; please try again.": "表單已過期，請重新送出。",
    "Dashboard": "總覽", "Counties": "縣市", "County": "縣市", "Jobs": "作業", "Job": "作業",
    "Users and tokens": "使用者與權杖", "Audit log": "稽核紀錄", "Sites": "機房", "Site": "機房",
    "Role": "角色", "Status": "狀態", "Health": "健康", "VMs": "虛擬機", "VM": "虛擬機", "Host": "主機",
    "Last job": "最近作業", "Address": "位址", "healthy": "正常", "unhealthy": "異常", "unknown": "未知",
    "Create": "建立", "Resize": "調整規格", "Configure": "套用設定", "Retire": "退役",
    "Purge disks and records": "一併刪除磁碟與紀錄", "Cold boot": "冷開機",
    "vCPUs": "vCPU 數", "Memory (MB)": "記憶體 (MB)", "Kind": "類型", "Target": "對象",
    "Created": "建立時間", "Started": "開始", "Finished": "結束", "Duration": "耗時", "Steps": "步驟",
    "Step": "步驟", "Output": "輸出", "Error": "錯誤", "Resume": "繼續", "Cancel": "取消",
    "Live": "即時更新中", "No jobs yet.": "尚無作業。", "No counties declared.": "尚未宣告任何縣市。",
    "Users": "使用者", "Tokens": "API 權杖", "Add user": "新增使用者", "Disable": "停用", "Enable": "啟用",
    "Disabled": "已停用", "Active": "使用中", "Revoked": "已撤銷", "Revoke": "撤銷",
    "New token": "新增權杖", "Label": "用途", "Last used": "最近使用",
    "Copy this token now; it is not shown again:": "請立即複製此權杖，之後不會再顯示：",
    "Change my password": "變更我的密碼", "New password": "新密碼", "Password changed.": "密碼已變更。",
    "County (for a county user)": "縣市 (縣市使用者)", "Save": "儲存",
    "When": "時間", "Who": "執行者", "From": "來源", "Action": "動作", "Chain": "雜湊鏈",
    "The audit log is intact.": "稽核紀錄完整，未被竄改。", "The audit log is broken:": "稽核紀錄遭破壞：",
    "events": "筆事件", "Not allowed.": "權限不足。", "Not found.": "找不到。", "Back": "返回",
    "signed in as": "登入身分", "Name": "名稱", "Sizes": "規格", "Older": "較舊",
    "Are you sure?": "確定要執行嗎？", "Refresh": "重新整理", "none": "無",
    # monitoring (controlplane/web/monitoring_page.py)
    "Monitoring": "效能監測", "Transaction": "交易", "Source": "來源", "Days": "天數", "Show": "顯示",
    "Answers": "回應數", "Failures": "失敗", "Last hour": "最近一小時",
    "Host and VM usage": "主機與虛擬機使用率", "Advice": "調整建議", "Apply": "套用",
    "Applied advice": "已套用的建議", "Before": "之前", "After": "之後",
    "No advice now.": "目前沒有建議。", "No answers in this window.": "此期間沒有回應紀錄。",
    "waiting for the hour after": "等待套用後一小時的數據",
    "The monitor is not running in this process (usage and advice need `countycloud serve`).":
        "此處未執行監測（使用率與建議需由 countycloud serve 提供）。",
    "Next page": "下一頁",
}

MESSAGES: dict[Lang, dict[str, str]] = {Lang.ZH_TW: ZH_TW, Lang.EN: {}}


def pick(value: str | None) -> Lang:
    try:
        return Lang(value) if value else DEFAULT
    except ValueError:
        return DEFAULT


def translate(lang: Lang, text: str) -> str:
    return MESSAGES[lang].get(text, text)
