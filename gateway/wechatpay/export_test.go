package wechatpay

// SetMaxBillSize lowers the bill size limit for a test; the returned
// function puts it back.
func SetMaxBillSize(n int64) (restore func()) {
	old := maxBillSize
	maxBillSize = n
	return func() { maxBillSize = old }
}
