-- 013_cds_feedback: what clinicians did with the server's CDS Hooks cards
-- (POST /cds-services/{id}/feedback, CDS Hooks 2.0 "Feedback"). A card is named
-- by its uuid, which is the request id of its audit record (audit.predictions
-- shows it as 32 hex digits: replace(card_uuid::text, '-', '') joins them), so
-- feedback joins the prediction it answers without any identifier of a patient
-- or an encounter. The clinician's free-text
-- userComment may name the patient: it is not stored, only whether one was given.

CREATE TABLE serve.cds_feedback (
    feedback_id          bigserial PRIMARY KEY,
    received_at          timestamptz NOT NULL DEFAULT now(),
    service_id           text NOT NULL,
    card_uuid            uuid NOT NULL,
    outcome              text NOT NULL CHECK (outcome IN ('accepted', 'overridden')),
    outcome_at           timestamptz,
    accepted_suggestions integer NOT NULL DEFAULT 0 CHECK (accepted_suggestions >= 0),
    override_code        text,        -- overrideReason.reason (a Coding) when overridden
    override_system      text,
    override_display     text,
    comment_given        boolean NOT NULL DEFAULT false,
    client               text NOT NULL  -- the API key id, or "jwt:" + 12 hex digits of the JWT issuer's SHA-256
);
CREATE INDEX cds_feedback_card ON serve.cds_feedback (card_uuid);
CREATE INDEX cds_feedback_received ON serve.cds_feedback (received_at);
