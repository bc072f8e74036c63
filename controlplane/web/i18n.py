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
    # disaster recovery (controlplane/web/dr_console.py; the statuses are dr.outage.STATUS_TEXT)
    "Disaster recovery": "災難復原", "Fail over primary to secondary": "主機房切換至備援機房",
    "Run a DR test": "執行災難復原演練", "Fail back to primary": "切回主機房",
    "failover": "切換", "dr_test": "災難復原演練", "failback": "切回", "job": "作業",
    "failure at": "故障時間", "first tier": "第一層級", "worst RPO": "最差 RPO", "county": "縣市",
    "tier": "層級", "restore point": "還原點", "parts": "各階段", "none yet": "尚無紀錄",
    "Site watch": "機房監看", "Verdict": "判定", "What is done": "處置", "Checked": "檢查時間",
    "Automatic failover: on, after a grace period of": "自動切換：開啟，寬限期",
    "Automatic failover: off (an operator decides)": "自動切換：關閉（由維運人員決定）",
    "The site watch is not running (`countycloud serve` runs it).":
        "機房監看未執行（由 countycloud serve 執行）。",
    "up": "正常", "down": "停擺", "suspect": "疑似異常",
    "suspect: a vantage point sees a failure": "疑似異常：有觀測點看到故障",
    "unknown: no fresh observation": "未知：沒有最新的觀測",
    "up again: the outage is over": "已恢復：停擺結束",
    "down; failover job {job}": "停擺；切換作業 {job}",
    "down; no county runs there": "停擺；該機房沒有執行中的縣市",
    "down; waiting for an operator (automatic failover is off)": "停擺；等待維運人員處置（自動切換未開啟）",
    "down; automatic failover in {seconds} s": "停擺；{seconds} 秒後自動切換",
    "down; the automatic failover waits for {site} to be up ({verdict})":
        "停擺；自動切換等待 {site} 恢復正常（目前：{verdict}）",
    "down; the failover was not submitted ({error}); trying again in {seconds} s":
        "停擺；切換作業未能送出（{error}），{seconds} 秒後重試",
    "down; submitting the failover": "停擺；正在送出切換作業",
}

MESSAGES: dict[Lang, dict[str, str]] = {Lang.ZH_TW: ZH_TW, Lang.EN: {}}


def pick(value: str | None) -> Lang:
    try:
        return Lang(value) if value else DEFAULT
    except ValueError:
        return DEFAULT


def translate(lang: Lang, text: str) -> str:
    return MESSAGES[lang].get(text, text)
