"""zh-TW names of the application's states, as users read them on screen."""

from __future__ import annotations

from collections.abc import Mapping

from tenant_app.enums import JournalKind, VoucherStatus

VOUCHER_STATUS_ZH: Mapping[VoucherStatus, str] = {
    VoucherStatus.DRAFT: "草稿",
    VoucherStatus.IN_APPROVAL: "簽核中",
    VoucherStatus.APPROVED: "已核准",
    VoucherStatus.REJECTED: "已退回",
    VoucherStatus.BATCHED: "已送公庫",
    VoucherStatus.PAID: "已撥付",
}

JOURNAL_KIND_ZH: Mapping[JournalKind, str] = {
    JournalKind.RECEIPT: "收入傳票",
    JournalKind.PAYMENT: "支出傳票",
    JournalKind.TRANSFER: "轉帳傳票",
}
