"""Multilingual pattern tables for the quote and signature stages.

Every pattern runs on one line (or on two or three wrapped lines joined by a
space) that callers cut to ``MAX_LINE_CHARS`` first, and none nests unbounded
quantifiers, so matching time stays linear in the line length.

The wording comes from the reply, forward and header templates of the common
mail clients (Gmail, Outlook, Apple Mail, Thunderbird, Yahoo, mobile clients)
in English, German, French, Spanish, Portuguese, Italian, Dutch, Swedish,
Danish, Norwegian, Finnish, Polish, Russian, Japanese and Chinese.
"""

from __future__ import annotations

import re

__all__ = [
    "ATTRIBUTION_ADDRESS_END",
    "ATTRIBUTION_DATE",
    "ATTRIBUTION_STARTER",
    "ATTRIBUTION_VERB_END",
    "ATTRIBUTION_VERB_MID",
    "DASH_NAME",
    "FORWARD_MARKER",
    "FORWARD_SUBJECT",
    "HEADER_KEYS",
    "HEADER_LINE",
    "INLINE_HEADER_FIELD",
    "MAX_LINE_CHARS",
    "MOBILE_LINE",
    "ORIGINAL_SEPARATOR",
    "QUOTED_LINE",
    "RULE_LINE",
    "SIGNATURE_DELIMITER",
    "SIGN_OFF",
    "header_field",
]

MAX_LINE_CHARS = 500
"""Characters of one line that any pattern here is run on."""

QUOTED_LINE = re.compile(r"^[ \t]{0,3}>")
"""A line quoted with ``>``, the convention of RFC 3676 section 4.5."""

# --- Attribution lines: "On <date>, <name> wrote:" and its translations. ---

# Words that open an attribution in languages where it starts with a date.
ATTRIBUTION_STARTER = re.compile(
    r"^[ \t]*(?:On|Am|Le|El|Em|Il|Op|Den|W dniu|Dne|Pada|En)\b",
    re.IGNORECASE,
)

# Verbs that end the attribution: "... wrote:", "... a écrit :", "...写道：".
ATTRIBUTION_VERB_END = re.compile(
    r"(?:\bwrote|\ba écrit|\bescribió|\bescreveu|\bha scritto|\bkirjoitti"
    r"|\bnapisał(?:\(a\)|a)?|\bpisze|\bnapsal(?:\(a\)|a)?|\bнаписал(?:\(а\)|а)?"
    r"|\bпишет|\byazdı|\bva escriure|写道|寫道|のメッセージ|書きました"
    r"|\bschrieb|\bschreef|\bskrev|\bskreiv)"
    r"[ \t\xa0]*[:：][ \t]*$",
    re.IGNORECASE,
)

# Germanic attributions may put the verb before the name:
# "Am 4. März 2024 um 11:02 schrieb Lena Kraus <lena@example.com>:".
ATTRIBUTION_VERB_MID = re.compile(
    r"\b(?:schrieb|schreef|skrev|skreiv)\b.{1,300}[:：][ \t]*$",
    re.IGNORECASE,
)

# A date, a time or an address: without one of these a line ending in
# "wrote:" is as likely to be prose ("Here is what she wrote:").
ATTRIBUTION_DATE = re.compile(
    r"\d{1,2}[:.h]\d{2}|\b(?:19|20)\d{2}\b|\d{1,4}[./-]\d{1,2}[./-]\d{2,4}"
    r"|\d{4}年|@|<[^<>]{1,200}>",
)

# A line that ends in "<address>:" after a date, as Gmail writes in some
# locales ("2024年3月4日(月) 11:02 Lena Kraus <lena@example.com>:").
ATTRIBUTION_ADDRESS_END = re.compile(
    r"\d.{0,300}<[^<>\s]{1,200}@[^<>\s]{1,200}>[ \t]*[:：][ \t]*$",
)

# --- Separator lines above quoted or forwarded messages. ---

ORIGINAL_SEPARATOR = re.compile(
    r"^[ \t>]*[-_=*]{0,20}[ \t]*"
    r"(?:Original Message|Ursprüngliche Nachricht|Originalnachricht"
    r"|Message d['’]origine|Message original|Mensaje original"
    r"|Mensagem original|Messaggio originale|Oorspronkelijk bericht"
    r"|Origineel bericht|Ursprungligt meddelande|Originalmeddelande"
    r"|Oprindelig meddelelse|Opprinnelig melding|Alkuperäinen viesti"
    r"|Wiadomość oryginalna|Oryginalna wiadomość|Исходное сообщение"
    r"|Исходное письмо|元のメッセージ|原始邮件|原始郵件|原始信件)"
    r"[ \t]*[-_=*]{0,20}[ \t]*$",
    re.IGNORECASE,
)

FORWARD_MARKER = re.compile(
    r"^[ \t]*(?:"
    r"[-_=*]{2,20}[ \t]*(?:Forwarded message|Forwarded Message"
    r"|Weitergeleitete Nachricht|Message transféré|Mensaje reenviado"
    r"|Mensagem encaminhada|Mensagem reencaminhada|Messaggio inoltrato"
    r"|Doorgestuurd bericht|Vidarebefordrat meddelande"
    r"|Videresendt meddelelse|Videresendt melding|Välitetty viesti"
    r"|Przekazana wiadomość|Wiadomość przekazana|Пересылаемое сообщение"
    r"|Пересланное сообщение|転送メッセージ|転送されたメッセージ"
    r"|转发的邮件|轉寄的郵件|已转发邮件)[ \t]*[-_=*]{0,20}"
    r"|(?:Begin forwarded message|Anfang der weitergeleiteten Nachricht"
    r"|Début du message réexpédié|Début du message transféré"
    r"|Inicio del mensaje reenviado|Comienzo del mensaje reenviado"
    r"|Início da mensagem reencaminhada|Início da mensagem encaminhada"
    r"|Inizio messaggio inoltrato|Begin doorgestuurd bericht"
    r"|Vidarebefordrat brev|Start på videresendt besked"
    r"|Videresendt melding|Välitetty viesti alkaa"
    r"|Początek przekazywanej wiadomości|Начало пересылаемого сообщения"
    r"|転送されたメッセージ|转发的邮件|轉寄的郵件)[ \t]*[:：]"
    r")[ \t]*$",
    re.IGNORECASE,
)

# Subject prefixes that mark a forward: English Fwd/FW, German WG, French TR,
# Spanish RV/REENV, Dutch Doorst, Nordic VS/VB/Vb, Portuguese ENC, Polish PD,
# Czech/Slovak PŘ, Russian Пересл/Fw, Chinese 转发/轉寄.
FORWARD_SUBJECT = re.compile(
    r"^[ \t]*(?:\[[^\]]{0,40}\][ \t]*)*"
    r"(?:Fwd?|FW|WG|TR|RV|REENV|Doorst|VS|VB|ENC|PD|PŘ|Пересл|转发|轉寄|轉發)"
    r"[ \t]*[:：]",
    re.IGNORECASE,
)

# --- Header blocks that mail clients write above quoted or forwarded text. ---

# Localized header names, each mapped to the field it names: from, date, to,
# cc or subject.
HEADER_KEYS: dict[str, str] = {}
for _field, _words in {
    "from": (
        "From Von De Da Van Från Fra Lähettäjä Od От Absender Remitente "
        "Mittente Afzender Avsändare Afsender Nadawca Отправитель 差出人 "
        "送信者 发件人 寄件者 寄件人 發件人"
    ),
    "date": (
        "Sent Date Gesendet Datum Envoyé Date Enviado Enviada Fecha Data Inviato "
        "Verzonden Skickat Sendt Dato Lähetetty Päivämäärä Wysłano Wysłane "
        "Отправлено Дата 送信日時 日付 发送时间 日期 時間 傳送時間 寄件日期 发送日期"
    ),
    "to": (
        "To An À A Para Aan Till Til Vastaanottaja Do Кому 宛先 收件人 收件者 "
        "Empfänger Destinataire Destinatario Destinatário"
    ),
    "cc": "Cc Kopie Cci Copia Kopia Kopi Копия 抄送 副本 Bcc",
    "subject": (
        "Subject Betreff Objet Asunto Assunto Oggetto Onderwerp Ämne Emne "
        "Aihe Temat Тема 件名 主题 主旨 標題"
    ),
}.items():
    for _word in _words.split():
        HEADER_KEYS.setdefault(_word.casefold(), _field)

# Multi-word keys that a plain split cannot hold.
for _phrase, _field in {
    "enviado el": "date",
    "enviada em": "date",
    "envoyé le": "date",
    "date d'envoi": "date",
    "fecha de envío": "date",
    "data de envio": "date",
    "reply-to": "to",
    "reply to": "to",
}.items():
    HEADER_KEYS[_phrase] = _field

_KEY_ALTERNATION = "|".join(
    re.escape(key) for key in sorted(HEADER_KEYS, key=len, reverse=True)
)

# "From: ...", "*From:* ...", "**Von:** ...", "差出人: ..." (with a full-width
# colon), as mail clients and HTML-to-text conversion write them.
HEADER_LINE = re.compile(
    rf"^[ \t]*[*_]{{0,2}}(?P<key>{_KEY_ALTERNATION})[ \t\xa0]*[*_]{{0,2}}"
    r"[ \t\xa0]*[:：][*_]{0,2}[ \t\xa0]*(?P<value>.*)$",
    re.IGNORECASE,
)

# Outlook 2003 and some converters put the whole block on one line:
# "From: Tom Sent: Monday, March 4 To: Lena Subject: Re: desks".
INLINE_HEADER_FIELD = re.compile(
    rf"(?:^|[ \t\xa0*_])(?P<key>{_KEY_ALTERNATION})[ \t\xa0]*[*_]{{0,2}}[:：]",
    re.IGNORECASE,
)


def header_field(line: str) -> tuple[str, str] | None:
    """Return ``(field, value)`` for a header-like line, else ``None``.

    The field is one of ``from``, ``date``, ``to``, ``cc`` or ``subject``.
    """
    match = HEADER_LINE.match(line[:MAX_LINE_CHARS])
    if match is None:
        return None
    field = HEADER_KEYS[match.group("key").casefold()]
    return field, match.group("value").strip().strip("*_").strip()


# A horizontal rule: Outlook's underscore line, a dash line or "=====".
RULE_LINE = re.compile(r"^[ \t]*(?:_{5,}|-{5,}|={5,}|\*{5,})[ \t]*$")

# --- Signature markers. ---

# RFC 3676 section 4.3: the signature delimiter is "-- " alone on a line.
# Clients that trim trailing spaces send "--", and HTML conversion may leave
# a no-break space.
SIGNATURE_DELIMITER = re.compile(r"^--[ \t\xa0]?$")

_SIGN_OFF_PHRASES = (
    # English
    r"thanks?(?: (?:you|again|so much|a lot|in advance|and regards))?",
    r"thank you(?: (?:very much|so much|in advance))?",
    r"many thanks",
    r"thx",
    r"(?:best|kind|warm|warmest|many|with|all the)? ?regards",
    r"(?:best|kindest|warmest|all the) (?:wishes|regards)",
    r"(?:very )?best",
    r"all the best",
    r"cheers",
    r"sincerely(?: yours)?",
    r"yours (?:sincerely|truly|faithfully)",
    r"respectfully",
    r"take care",
    r"talk soon",
    r"br",
    # German
    r"mit freundlichen grü(?:ß|ss)en",
    r"freundliche grü(?:ß|ss)e",
    r"(?:viele|beste|liebe|herzliche) grü(?:ß|ss)e",
    r"mfg",
    r"lg",
    r"vg",
    r"gruß",
    r"danke(?: schön)?",
    # French
    r"cordialement",
    r"bien (?:à vous|cordialement)",
    r"bien à toi",
    r"salutations(?: distinguées)?",
    r"meilleures salutations",
    r"merci(?: beaucoup| d'avance)?",
    r"bonne journée",
    # Spanish
    r"saludos(?: cordiales)?",
    r"un saludo",
    r"atentamente",
    r"gracias",
    r"muchas gracias",
    # Portuguese
    r"atenciosamente",
    r"cumprimentos",
    r"abraços?",
    r"obrigad[oa]",
    # Italian
    r"cordiali saluti",
    r"distinti saluti",
    r"saluti",
    r"grazie(?: mille)?",
    # Dutch
    r"met vriendelijke groet(?:en)?",
    r"vriendelijke groet(?:en)?",
    r"groet(?:en|jes)?",
    r"mvg",
    # Swedish, Danish, Norwegian
    r"med vänlig(?:a)? hälsning(?:ar)?",
    r"vänliga hälsningar",
    r"hälsningar",
    r"mvh",
    r"venlig hilsen",
    r"med venlig hilsen",
    r"med vennlig hilsen",
    r"vennlig hilsen",
    r"hilsen",
    r"tack",
    r"tak",
    # Finnish
    r"ystävällisin terveisin",
    r"terveisin",
    r"kiitos",
    # Polish
    r"pozdrawiam(?: serdecznie)?",
    r"z poważaniem",
    r"dziękuję",
    # Russian
    r"с уважением",
    r"спасибо",
    r"всего (?:доброго|хорошего)",
    # Japanese
    r"よろしくお願い(?:いた|致)?します",
    r"よろしくお願い申し上げます",
    r"以上(?:、)?よろしくお願いします",
    # Chinese
    r"此致(?:敬礼)?",
    r"谢谢",
    r"謝謝",
    r"祝好",
)

# A sign-off alone on its line, optionally followed by a short name on the
# same line ("Thanks, Ana"); "Thanks, please send the quote." does not match.
_NAME_WORD = r"[A-ZÀ-ÖØ-ÞА-ЯЁ][\w.'-]{0,30}"

SIGN_OFF = re.compile(
    r"^[ \t]*(?i:" + "|".join(_SIGN_OFF_PHRASES) + r")"
    r"[ \t]*[,.!:;、。！]*"
    rf"(?:[ \t]+[-–—]?[ \t]*{_NAME_WORD}(?:[ \t]+{_NAME_WORD}){{0,2}}[.!]?)?"
    r"[ \t]*$",
)

MOBILE_LINE = re.compile(
    r"^[ \t]*(?:"
    r"Sent (?:from|with|via|using) (?:my |an? )?[\w'.&() -]{1,40}"
    r"|Sent from Yahoo Mail[\w ]{0,30}|Get Outlook for (?:iOS|Android)"
    r"|Von meinem [\w ]{1,40} gesendet|Gesendet von [\w ]{1,40}"
    r"|Envoyé de mon [\w ]{1,40}|Envoyé depuis [\w ]{1,40}"
    r"|Enviado desde mi [\w ]{1,40}|Enviado do meu [\w ]{1,40}"
    r"|Enviado de meu [\w ]{1,40}|Inviato da(?:l mio)? [\w ]{1,40}"
    r"|Verzonden (?:met|vanaf) (?:mijn )?[\w ]{1,40}"
    r"|Skickat från min [\w ]{1,40}|Sendt fra min [\w ]{1,40}"
    r"|Lähetetty (?:iPhonesta|Android-laitteesta|[\w ]{1,40}sta)"
    r"|Wysłane z (?:mojego )?[\w ]{1,40}|Отправлено с (?:моего )?[\w ]{1,40}"
    r"|iPhoneから送信|从我的\s?iPhone发送|從我的\s?iPhone傳送"
    r")[ \t]*[.!]?[ \t]*$",
    re.IGNORECASE,
)

# "-Abhishek Kona", "-- Tim", "— Ana": a name signed with a leading dash.
# A single hyphen followed by a space is a bullet ("- Apples"), so it needs
# no space or a double dash.
DASH_NAME = re.compile(
    rf"^[ \t]*(?:-(?=\w)|--[ \t]?|[–—~][ \t]?){_NAME_WORD}"
    rf"(?:[ \t]+{_NAME_WORD}){{0,3}}[ \t]*$",
)
