CREATE INDEX idx_outbox_jobs_out_refund_no ON outbox_jobs (out_refund_no);
