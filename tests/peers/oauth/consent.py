"""A person's browser on the consent step: opens AUTHORIZE_URL (the gateway's), signs in to the
authorization server's development login page as USER, grants the consent, and follows the
redirect back to the gateway's callback. Prints the callback's status, then its page.

python3 consent.py AUTHORIZE_URL USER [deny]
"""
import re
import sys
from urllib.parse import urljoin

import requests

url, user = sys.argv[1], sys.argv[2]
deny = len(sys.argv) > 3 and sys.argv[3] == "deny"
browser = requests.Session()
response = browser.get(url, allow_redirects=True)
for _ in range(6):
    page = response.text
    form = re.search(r'<form[^>]*action="([^"]+)"', page)
    if form is None:
        break
    action = urljoin(response.url, form.group(1))
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page))
    if 'name="login"' in page:
        fields.update({"login": user, "password": "any"})
    elif deny:
        # The consent page's "abort" link: the person declines.
        abort = re.search(r'href="([^"]+/abort)"', page)
        response = browser.get(urljoin(response.url, abort.group(1)), allow_redirects=True)
        break
    response = browser.post(action, data=fields, allow_redirects=True)
print(response.status_code)
print(response.text)
